"use strict";
// Say why the last sign-in failed (the server redirects back with ?denied=1).
if (new URLSearchParams(location.search).has("denied")) {
  document.getElementById("denied").hidden = false;
}
