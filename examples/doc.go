// Package examples holds no library code: it is the home of the runnable
// examples and of the tests that run them against the real wsbridge binary.
//
//   - php/: a chat backend in plain PHP (GET/POST/DELETE /<ClientId>, pushes
//     through the admin API), served by php -S with php/router.php;
//     php/verify_signature.php checks the RFC 9421 signature wsbridge puts
//     on backend calls with -sign-key (bridge/sign).
//   - chat/: the chat page (index.html, chat.js; no build step) and its
//     browser test, chat/e2e/chat.spec.mjs (playwright-core + Debian's Chromium).
//
// examples_test.go drives the PHP API over HTTP and runs the browser test
// around a wsbridge restart; sign_test.go runs the PHP verifier on calls
// signed by bridge/sign. README.md shows how to run it all by hand.
package examples
