// Scenario 5: the account page lists the device; the person opens it and
// signs it out, confirming with the password.
//
// args: {artifacts, url (the account page), deviceID, username, password}
import { run } from './lib.mjs';

await run(async (phone, a) => {
  const page = phone.page;
  await phone.open(a.url);
  const signedIn = await phone.signInIfAsked(a.username, a.password);
  if ((await phone.text('h1')) !== 'Your account') throw new Error(`want the account page, got: ${await phone.text('main')}`);
  await phone.visited('account');
  const data = { signedIn, sessionsBefore: await phone.text('ul.sessions') };
  const device = page.locator('a.session', { hasText: a.deviceID });
  if ((await device.count()) !== 1) throw new Error(`the account page lists ${await device.count()} sessions with ${a.deviceID}: ${data.sessionsBefore}`);
  await phone.tap(device, `session link of ${a.deviceID}`);
  data.sessionText = await phone.text('main');
  await phone.visited('device');
  await phone.tap(page.getByRole('link', { name: 'Sign this device out…' }), '"Sign this device out…" link');
  data.confirmH1 = await phone.text('h1');
  data.confirmText = await phone.text('main');
  await phone.visited('confirm-sign-out');
  await phone.page.locator('input[name=password]').fill(a.password);
  await phone.tap(page.locator('form button[type=submit].danger'), 'sign-out button');
  data.status = phone.status;
  data.url = page.url();
  data.h1 = await phone.text('h1');
  data.notice = await phone.text('.notice');
  data.error = await phone.text('.error');
  data.sessionsAfter = await phone.text('ul.sessions');
  await phone.visited('signed-out');
  return data;
});
