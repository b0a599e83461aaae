"use strict";
// Say why the last sign-in failed (the server redirects back with ?denied=1).
const why = new URLSearchParams(location.search).get("denied");
if (why) {
  document.getElementById(why === "operator" ? "not-operator" : "denied").hidden = false;
}
