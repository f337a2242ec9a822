// Scenario 4: a native app signs in with the authorization-code grant and
// PKCE; the browser comes back to the app's loopback redirect URI. A
// client the operator trusts skips the consent page (action "none").
//
// args: {artifacts, url (the authorization request), username, password,
//        redirectPrefix (where the app listens),
//        action: "approve" | "deny" | "none", wrongPasswordFirst: bool}
import { run } from './lib.mjs';

await run(async (phone, a) => {
  const page = phone.page;
  await phone.open(a.url);
  if (a.wrongPasswordFirst) {
    // A typo first: the sign-in form comes back from POST /login.
    const again = await phone.signInIfAsked(a.username, 'not the password');
    if (!again || !(await phone.text('.error')).includes('Wrong username or password')) {
      throw new Error(`a wrong password did not show the sign-in form again with an error: ${await phone.text('main')}`);
    }
  }
  const signedIn = await phone.signInIfAsked(a.username, a.password);
  if (!signedIn) throw new Error(`no sign-in form at the authorization endpoint: ${await phone.text('main')}`);
  const data = {};
  if (a.action !== 'none') {
    const approve = page.locator('button[name=action][value=approve]');
    const deny = page.locator('button[name=action][value=deny]');
    if ((await approve.count()) === 0) throw new Error(`want a consent page with an Approve button, got: ${await phone.text('main')}`);
    await phone.visited('consent');
    data.consentH1 = await phone.text('h1');
    data.consentText = await phone.text('main');
    const confirm = page.locator('input[type=checkbox][name=confirm]');
    data.hasConfirm = (await confirm.count()) > 0;
    if (data.hasConfirm && a.action !== 'deny') {
      const label = page.locator('label:has(input[name=confirm])');
      await phone.checkTarget(label, 'confirm checkbox label');
      await label.tap();
    }
    if (a.action === 'deny') {
      await phone.checkTarget(approve, 'Approve button');
      await phone.tap(deny, 'Deny button');
    } else {
      await phone.tap(approve, 'Approve button');
    }
  }
  if (!page.url().startsWith(a.redirectPrefix)) {
    // A page on the way back to the app (a meta refresh, say): wait for
    // it to move on; screenshot it only if it stays.
    data.via = page.url();
    try {
      await page.waitForURL((u) => u.href.startsWith(a.redirectPrefix), { waitUntil: 'load', timeout: 10000 });
    } catch (err) {
      await phone.visited('not-back-in-app');
      throw new Error(`the browser stayed at ${page.url()}, not back at ${a.redirectPrefix}…: ${await phone.text('body')}`);
    }
  }
  data.url = page.url();
  data.status = phone.status;
  data.text = await phone.text('body');
  if (!data.url.startsWith(a.redirectPrefix)) throw new Error(`the browser is at ${data.url}, not back at ${a.redirectPrefix}…: ${data.text}`);
  await phone.visited('back-in-app');
  return data;
});
