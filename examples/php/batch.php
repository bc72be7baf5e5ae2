<?php
// A batch handler for wsbridge's -backend-batch-url (docs/protocol.md,
// "Batched calls"): one POST carries the messages of many connections,
// and the answer carries one reply per message, in the same order.
//
//     require 'batch.php';
//     wsbridge_batch(function (array $m): ?array {
//         return ['body' => "you said: {$m['body']}"];
//     });
//
// Each request record is a header line of six space-separated fields,
//     <text|binary> <ClientId> <connection id> <seq> <length> <meta>
// then exactly <length> bytes, then "\n". <meta> is "-" or the
// connection's metadata as name=value pairs joined by "&", percent-encoded.
// Each reply record is "<text|binary> <length>[ <set-meta>]\n", the bytes,
// "\n"; length 0 sends nothing to the client.

declare(strict_types=1);

/**
 * Reads the batch from php://input, calls $handle once per message in
 * order, and writes the answer. $handle gets ['kind' => 'text'|'binary',
 * 'client_id', 'connection_id', 'seq' => int, 'meta' => [name => value],
 * 'body' => string] and returns null (no reply) or ['body' => string,
 * 'kind' => 'text'|'binary' (default 'text'), 'set_meta' => [name => value]
 * ('' deletes a name)].
 */
function wsbridge_batch(callable $handle): void
{
    $in = (string) file_get_contents('php://input');
    $out = '';
    for ($off = 0; ($nl = strpos($in, "\n", $off)) !== false; $off = $nl + 1 + $len + 1) {
        [$kind, $id, $conn, $seq, $len, $meta] = explode(' ', substr($in, $off, $nl - $off), 6);
        $len = (int) $len;
        $m = [];
        foreach ($meta === '-' ? [] : explode('&', $meta) as $pair) {
            [$k, $v] = explode('=', $pair, 2) + [1 => ''];
            $m[rawurldecode($k)] = rawurldecode($v);
        }
        $r = $handle(['kind' => $kind, 'client_id' => $id, 'connection_id' => $conn, 'seq' => (int) $seq,
            'meta' => $m, 'body' => substr($in, $nl + 1, $len)]) ?? ['body' => ''];
        $line = ($r['kind'] ?? 'text') . ' ' . strlen($r['body']);
        if (!empty($r['set_meta'])) {
            $line .= ' ' . http_build_query($r['set_meta'], '', '&', PHP_QUERY_RFC3986);
        }
        $out .= $line . "\n" . $r['body'] . "\n";
    }
    header('Content-Type: application/x-wsbridge-batch');
    echo $out;
}
