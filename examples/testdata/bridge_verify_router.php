<?php
// Test backend for TestPHPVerifiesBridge (examples/sign_test.go): verifies
// every call the wsbridge binary makes with examples/php/verify_signature.php,
// appends each verified call as a JSON line to $SIGN_LOG, and answers the
// GET "ok" and each POST with the verified call as JSON. A call that does
// not verify gets 401 and the reason.

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
$call['method'] = $_SERVER['REQUEST_METHOD'];
$call['uri'] = $_SERVER['REQUEST_URI'];
file_put_contents((string) getenv('SIGN_LOG'), json_encode($call) . "\n", FILE_APPEND | LOCK_EX);
switch ($call['method']) {
    case 'GET':
        echo 'ok';
        break;
    case 'POST':
        header('Content-Type: text/plain; charset=utf-8');
        echo json_encode($call);
        break;
}
