// edgebox sample site script: shows when the page was rendered in this browser.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const clock = document.getElementById("clock");
  if (clock) {
    clock.textContent = `Rendered at ${new Date().toISOString()}.`;
  }
});
