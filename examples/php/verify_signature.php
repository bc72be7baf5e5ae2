<?php
// Verifies the signature wsbridge puts on every backend call when it runs
// with -sign-key <keyid>=<secret>[,…]: RFC 9421 HTTP Message Signatures,
// HMAC-SHA256, label "wsbridge" (see bridge/sign/doc.go for what is signed
// and why). Plain PHP 8.2: hash_hmac, base64, two regular expressions.
//
//   require __DIR__ . '/verify_signature.php';
//   $keys = wsbridge_parse_keys(getenv('WSBRIDGE_SIGN_KEY'));  // the bridge's -sign-key value
//   try {
//       $call = wsbridge_verify_request($keys, 300);           // max age in seconds
//   } catch (WsbridgeSignatureError $e) {
//       http_response_code(401);
//       exit;
//   }
//   // $call: ['keyid' => …, 'connection_id' => …, 'seq' => …, 'created' => …]
//
// It does not remember anything: to refuse a replay within the max age, keep
// the highest seq handled per connection_id and refuse a lower one (a DELETE
// the bridge retries comes again with the same seq).

declare(strict_types=1);

final class WsbridgeSignatureError extends RuntimeException
{
}

/** Parses a -sign-key value into [keyid => secret]; the secret's bytes as given. */
function wsbridge_parse_keys(string $value): array
{
    $keys = [];
    foreach (explode(',', $value) as $entry) {
        $kv = explode('=', $entry, 2);
        if (count($kv) !== 2 || $kv[0] === '' || $kv[1] === '' || isset($keys[$kv[0]])) {
            throw new InvalidArgumentException('bad -sign-key entry');
        }
        $keys[$kv[0]] = $kv[1];
    }
    return $keys;
}

/**
 * Checks one call: $path and $query as in the request line (raw, $query
 * without '?'), $headers as lower-case name => value, $body the raw body.
 * Returns what the signature vouches for, or throws WsbridgeSignatureError.
 */
function wsbridge_verify(string $method, string $path, string $query, array $headers, string $body,
                         array $keys, int $maxAge, ?int $now = null): array
{
    $fail = static fn (string $why) => throw new WsbridgeSignatureError($why);
    // Signature-Input: wsbridge=("@method" …);created=…;keyid="…";alg="hmac-sha256"
    $param = ';[a-z*][a-z0-9_.*-]*=(?:-?[0-9]{1,15}|"[^"\\\\]*")';
    preg_match('/(?:^|,)\s*wsbridge=(\(((?:"[^"\\\\]*"(?: "[^"\\\\]*")*)?)\)((?:' . $param . ')*))\s*(?:,|$)/',
        $headers['signature-input'] ?? '', $in) || $fail('no wsbridge Signature-Input');
    preg_match('/(?:^|,)\s*wsbridge=:([A-Za-z0-9+\/]*={0,2}):/', $headers['signature'] ?? '', $sig)
        || $fail('no wsbridge Signature');
    $names = $in[2] === '' ? [] : explode(' ', str_replace('"', '', $in[2]));
    $missing = array_diff(['@method', '@path', '@query', 'content-digest', 'wsbridge-connection-id', 'wsbridge-seq'], $names);
    ($missing || count(array_unique($names)) !== count($names)) && $fail('required components not covered');
    preg_match_all('/;([a-z*][a-z0-9_.*-]*)=(-?[0-9]+|"[^"]*")/', $in[3], $ps, PREG_SET_ORDER);
    $p = [];
    foreach ($ps as [, $k, $v]) {
        $p[$k] = $v;
    }
    $keyid = trim($p['keyid'] ?? '', '"');
    isset($keys[$keyid]) || $fail('unknown keyid');
    ($p['alg'] ?? '"hmac-sha256"') === '"hmac-sha256"' || $fail('alg is not hmac-sha256');
    preg_match('/^-?[0-9]+$/', $p['created'] ?? '') || $fail('no created');
    // The signature base (RFC 9421 §2.5), from the request as received.
    $base = '';
    foreach ($names as $n) {
        $v = match ($n) {
            '@method' => $method,
            '@path' => $path === '' ? '/' : $path,
            '@query' => '?' . $query,
            default => $headers[$n] ?? $fail("covered header $n absent"),
        };
        $base .= "\"$n\": " . trim((string) $v, " \t") . "\n";
    }
    $base .= '"@signature-params": ' . $in[1];
    hash_equals(hash_hmac('sha256', $base, $keys[$keyid], true), (string) base64_decode($sig[1], true))
        || $fail('signature does not match');
    // Signed; now the values it vouches for.
    preg_match('/(?:^|,)\s*sha-256=:([A-Za-z0-9+\/]*={0,2}):/', $headers['content-digest'] ?? '', $d)
        && hash_equals(base64_encode(hash('sha256', $body, true)), $d[1]) || $fail('Content-Digest does not match the body');
    $created = (int) $p['created'];
    abs(($now ?? time()) - $created) <= $maxAge || $fail('created is more than max age from now');
    preg_match('/^[0-9]{1,18}$/', $headers['wsbridge-seq']) || $fail('Wsbridge-Seq is not a number');
    return ['keyid' => $keyid, 'connection_id' => $headers['wsbridge-connection-id'],
            'seq' => (int) $headers['wsbridge-seq'], 'created' => $created];
}

/** wsbridge_verify() on the request being served (php -S, PHP-FPM, mod_php). */
function wsbridge_verify_request(array $keys, int $maxAge = 300): array
{
    $target = explode('?', $_SERVER['REQUEST_URI'] ?? '/', 2);
    $headers = [];
    foreach ($_SERVER as $name => $value) {
        if (str_starts_with($name, 'HTTP_')) {
            $headers[strtolower(strtr(substr($name, 5), '_', '-'))] = (string) $value;
        }
    }
    return wsbridge_verify($_SERVER['REQUEST_METHOD'] ?? 'GET', $target[0], $target[1] ?? '', $headers,
        (string) file_get_contents('php://input'), $keys, $maxAge);
}
