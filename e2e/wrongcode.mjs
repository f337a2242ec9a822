// Scenario 3: a person types a wrong code at verification_uri (/device).
//
// args: {artifacts, url, code}
import { run } from './lib.mjs';

await run(async (phone, a) => {
  const page = phone.page;
  await phone.goto(a.url, 'enter-code');
  const input = page.locator('input[name=user_code]');
  await input.fill(a.code);
  await phone.tap(page.getByRole('button', { name: 'Continue' }), 'Continue button');
  const data = {
    status: phone.status,
    url: page.url(),
    h1: await phone.text('h1'),
    error: await phone.text('.error'),
    errorRole: (await page.locator('.error').count()) ? await page.locator('.error').first().getAttribute('role') : '',
    typed: await input.inputValue().catch(() => ''),
  };
  await phone.visited('wrong-code');
  return data;
});
