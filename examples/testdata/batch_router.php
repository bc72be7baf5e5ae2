<?php
// Test backend for examples/batch_test.go: accepts every client (and keeps
// its ClientId as metadata), answers batches at /api/batch with
// examples/php/batch.php, and acknowledges DELETEs.
declare(strict_types=1);

require __DIR__ . '/../php/batch.php';

$path = parse_url($_SERVER['REQUEST_URI'] ?? '/', PHP_URL_PATH);
$method = $_SERVER['REQUEST_METHOD'] ?? 'GET';
if ($method === 'POST' && $path === '/api/batch') {
    wsbridge_batch(function (array $m): ?array {
        if ($m['body'] === 'quiet') {
            return null;
        }
        if ($m['kind'] === 'binary') {
            return ['kind' => 'binary', 'body' => strrev($m['body'])];
        }
        $r = ['body' => sprintf('%s#%d user=%s room=%s: %s', $m['client_id'], $m['seq'],
            $m['meta']['User'] ?? '', $m['meta']['Room'] ?? '', $m['body'])];
        if ($m['body'] === 'join') {
            $r['set_meta'] = ['Room' => 'a b&c'];
        }
        return $r;
    });
    return;
}
if (str_starts_with((string) $path, '/api/') && $method === 'GET') {
    header('Wsbridge-Set-Meta-User: ' . substr((string) $path, 5));
    echo 'ok';
    return;
}
if (str_starts_with((string) $path, '/api/') && $method === 'DELETE') {
    echo 'ok';
    return;
}
http_response_code(404);
