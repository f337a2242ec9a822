// Scenario 4: a native app signs in with the authorization-code grant and
// PKCE; the browser comes back to the app's loopback redirect URI.
//
// args: {artifacts, url (the authorization request), username, password,
//        redirectPrefix (where the app listens)}
import { run } from './lib.mjs';

await run(async (phone, a) => {
  const page = phone.page;
  await phone.open(a.url);
  const signedIn = await phone.signInIfAsked(a.username, a.password);
  if (!signedIn) throw new Error(`no sign-in form at the authorization endpoint: ${await phone.text('main')}`);
  const approve = page.locator('button[name=action][value=approve]');
  if ((await approve.count()) === 0) throw new Error(`want a consent page with an Approve button, got: ${await phone.text('main')}`);
  await phone.visited('consent');
  const data = { consentH1: await phone.text('h1'), consentText: await phone.text('main') };
  const confirm = page.locator('input[type=checkbox][name=confirm]');
  data.hasConfirm = (await confirm.count()) > 0;
  if (data.hasConfirm) {
    const label = page.locator('label:has(input[name=confirm])');
    await phone.checkTarget(label, 'confirm checkbox label');
    await label.tap();
  }
  await phone.tap(approve, 'Approve button');
  data.url = page.url();
  data.status = phone.status;
  data.text = await phone.text('body');
  if (!data.url.startsWith(a.redirectPrefix)) throw new Error(`after Approve the browser is at ${data.url}, not at ${a.redirectPrefix}…: ${data.text}`);
  await phone.visited('back-in-app');
  return data;
});
