// The demo mailbox reloads every 10 seconds (a file: the Content-Security-Policy allows no inline script).
setTimeout(function () { location.reload(); }, 10000);
