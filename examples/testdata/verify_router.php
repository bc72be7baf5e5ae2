<?php
// Test router for examples/sign_test.go: answers every request with what
// examples/php/verify_signature.php makes of it — 200 and the verified call
// as JSON, or 401 and the reason.
//
//   WSBRIDGE_SIGN_KEY=k1=secret SIGN_MAX_AGE=300 php -S 127.0.0.1:8000 examples/testdata/verify_router.php

declare(strict_types=1);

require dirname(__DIR__) . '/php/verify_signature.php';

$keys = wsbridge_parse_keys((string) getenv('WSBRIDGE_SIGN_KEY'));
try {
    $call = wsbridge_verify_request($keys, (int) (getenv('SIGN_MAX_AGE') ?: 300));
} catch (WsbridgeSignatureError $e) {
    http_response_code(401);
    header('Content-Type: text/plain; charset=utf-8');
    echo $e->getMessage(), "\n";
    return;
}
header('Content-Type: application/json');
echo json_encode($call), "\n";
