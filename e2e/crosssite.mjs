// Scenario: a browser signed in to devicegrantd follows a link on another
// site to the authorization request of a client the operator trusts. The
// link alone must approve nothing: the consent page shows, and only the
// tap on Continue approves (issue 10: cross-site GET approvals).
//
// args: {artifacts, signIn (a page that asks to sign in), username,
//        password, linkPage (a page on another site linking to the
//        authorization request), redirectPrefix (where the app listens)}
import { run } from './lib.mjs';

await run(async (phone, a) => {
  const page = phone.page;
  await phone.open(a.signIn);
  if (!(await phone.signInIfAsked(a.username, a.password))) throw new Error(`no sign-in form: ${await phone.text('main')}`);
  await phone.visited('signed-in');
  await phone.goto(a.linkPage, 'other-site');
  await phone.tap(page.locator('a#authorize'), 'link on another site');
  const approve = page.locator('button[name=action][value=approve]');
  const data = { afterLink: page.url(), consent: (await approve.count()) > 0 };
  if (!data.consent) {
    await phone.visited('not-consent');
    throw new Error(`a link from another site did not stop at the consent page; the browser is at ${page.url()}: ${await phone.text('body')}`);
  }
  await phone.visited('consent');
  data.consentText = await phone.text('main');
  await phone.checkpoint('consent'); // the Go test checks nothing was approved
  await phone.tap(approve, 'Continue button');
  if (!page.url().startsWith(a.redirectPrefix)) {
    await page.waitForURL((u) => u.href.startsWith(a.redirectPrefix), { waitUntil: 'load', timeout: 10000 });
  }
  await phone.visited('back-in-app');
  data.url = page.url();
  return data;
});
