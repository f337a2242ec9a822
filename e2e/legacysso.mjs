// Scenario 6: an app that only knows the legacy Matrix login sends the
// browser to /_matrix/client/v3/login/sso/redirect; the person signs in,
// is shown which app (the redirect URL's host) is asking, confirms, and
// the browser goes back to the app with a loginToken.
//
// args: {artifacts, url (the SSO redirect), username, password,
//        appHost (what the confirmation page must name),
//        redirectPrefix (where the app listens), accountURL}
import { run } from './lib.mjs';

await run(async (phone, a) => {
  const page = phone.page;
  await phone.open(a.url);
  const signedIn = await phone.signInIfAsked(a.username, a.password);
  if (!signedIn) throw new Error(`no sign-in form after the SSO redirect: ${await phone.text('main')}`);
  const data = { confirmURL: page.url(), confirmH1: await phone.text('h1'), confirmText: await phone.text('main') };
  await phone.visited('confirm-app');
  if (!data.confirmH1.includes(a.appHost)) throw new Error(`the confirmation page does not name ${a.appHost}: ${data.confirmH1}`);
  const cont = page.locator('button[name=action][value=approve]');
  await phone.checkTarget(page.locator('button[name=action][value=deny]'), 'Cancel button');
  await phone.tap(cont, 'Continue button');
  if (!page.url().startsWith(a.redirectPrefix)) {
    await phone.visited('not-back-in-app');
    throw new Error(`the browser is at ${page.url()}, not back at ${a.redirectPrefix}…: ${await phone.text('body')}`);
  }
  data.url = page.url();
  data.status = phone.status;
  await phone.visited('back-in-app');
  // The Go test exchanges the loginToken meanwhile; then the account page
  // must list the new device, marked as a legacy login.
  await phone.checkpoint('back-in-app', data);
  await phone.open(a.accountURL);
  await phone.visited('account');
  data.sessions = await phone.text('ul.sessions');
  const tag = page.locator('ul.sessions .tag');
  data.tags = await tag.count();
  if (data.tags > 0) data.tagText = (await tag.first().innerText()).trim();
  return data;
});
