<?php
// Front controller for the wsbridge chat example.
//
//     PHP_CLI_SERVER_WORKERS=4 php -S 127.0.0.1:8000 examples/php/router.php
//
// One PHP server answers two kinds of caller, told apart by the path:
//
//   GET /                    the chat page (examples/chat/index.html)
//   GET /static/<file>       its assets (examples/chat/<file>, a fixed list)
//   GET|POST|DELETE /<id>    the wsbridge backend API (chat.php)
//
// The names cannot collide: a ClientId is one path segment of
// [A-Za-z0-9._~-] (see DESIGN.md §4), so "/" (empty) and "/static/..." (has a
// second "/") are never ClientIds, and every ClientId is API. That is why the
// assets live under /static/ and not at /chat.js, which is a valid ClientId.
//
// Any other web server works too: send every request to this file
// (nginx: try_files $uri /router.php; Apache: FallbackResource /router.php).

declare(strict_types=1);

require __DIR__ . '/chat.php';

// Assets served under /static/: name => content type. A fixed list, so no
// path from the request ever reaches the file system.
const STATIC_FILES = [
    'chat.js' => 'text/javascript; charset=utf-8',
    'chat.css' => 'text/css; charset=utf-8',
];

$path = parse_url($_SERVER['REQUEST_URI'] ?? '/', PHP_URL_PATH);
if (!is_string($path)) {
    $path = '/';
}
$method = $_SERVER['REQUEST_METHOD'] ?? 'GET';
$assets = getenv('CHAT_STATIC_DIR') ?: dirname(__DIR__) . '/chat';

if ($path === '/' || $path === '/index.html') {
    serve_file($method, "$assets/index.html", 'text/html; charset=utf-8');
    return;
}
if (str_starts_with($path, '/static/')) {
    $name = substr($path, strlen('/static/'));
    if (isset(STATIC_FILES[$name])) {
        serve_file($method, "$assets/$name", STATIC_FILES[$name]);
        return;
    }
    respond(404, "not found\n");
    return;
}
$id = substr($path, 1);
if (!valid_client_id($id)) {
    respond(404, "not found\n");
    return;
}
handle_api($method, $id);

/** serve_file answers GET or HEAD with one file, uncached so edits show. */
function serve_file(string $method, string $file, string $type): void
{
    if ($method !== 'GET' && $method !== 'HEAD') {
        header('Allow: GET, HEAD');
        respond(405, "method not allowed\n");
        return;
    }
    $body = @file_get_contents($file);
    if ($body === false) {
        respond(404, "not found\n");
        return;
    }
    header("Content-Type: $type");
    header('Cache-Control: no-store');
    if ($method === 'GET') {
        echo $body;
    }
}
