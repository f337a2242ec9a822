// Scenarios 1 and 2: a person scans the device's QR code
// (verification_uri_complete, upper case as QR alphanumeric mode needs),
// signs in, compares the code and approves or denies.
//
// args: {artifacts, url, userCode, username, password,
//        action: "approve" | "deny", tryUnticked: bool}
import { run } from './lib.mjs';

await run(async (phone, a) => {
  const page = phone.page;
  await phone.open(a.url);
  const opened = page.url();
  const signedIn = await phone.signInIfAsked(a.username, a.password);
  if (!signedIn) throw new Error(`no sign-in form at ${a.url}: ${await phone.text('main')}`);
  if ((await phone.text('h1')) !== 'Allow this device?') throw new Error(`want the consent page, got: ${await phone.text('main')}`);
  await phone.visited('consent', { userCode: a.userCode });

  const approve = page.locator('button[name=action][value=approve]');
  const deny = page.locator('button[name=action][value=deny]');
  const confirm = page.locator('input[type=checkbox][name=confirm]');
  const data = { opened, consentURL: page.url() };

  if (a.action === 'deny') {
    await phone.checkTarget(approve, 'Approve button');
    await phone.tap(deny, 'Deny button');
  } else {
    if (a.tryUnticked) {
      // HTML5 `required` must stop the form before it is sent.
      if (!(await confirm.evaluate((el) => el.required))) phone.violation('the confirm checkbox is not required');
      const r = await phone.tapNoNavigation(approve, 'Approve button (box not ticked)');
      data.unticked = {
        navigated: r.navigated,
        requests: r.requests,
        valueMissing: await confirm.evaluate((el) => el.validity.valueMissing),
        validationMessage: await confirm.evaluate((el) => el.validationMessage),
        url: page.url(),
        h1: await phone.text('h1'),
      };
      await phone.visited('consent-not-ticked', { userCode: a.userCode });
      await phone.checkpoint('unticked', data.unticked);
    }
    // Tap the label, as a thumb would: the box itself is small.
    const label = page.locator('label.confirm');
    await phone.checkTarget(label, 'confirm checkbox label');
    await label.tap();
    if (!(await confirm.isChecked())) throw new Error('tapping the label did not tick the box');
    await phone.tap(approve, 'Approve button');
  }
  data.status = phone.status;
  data.h1 = await phone.text('h1');
  data.message = await phone.text('main');
  await phone.visited(a.action === 'deny' ? 'denied' : 'approved');
  return data;
});
