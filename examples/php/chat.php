<?php
// The wsbridge backend of the chat example: plain PHP 8.2, no framework, no
// Composer, no extension beyond what Debian's php-cli has (json, iconv, the
// http:// stream wrapper).
//
// wsbridge calls it once per WebSocket event (DESIGN.md §4):
//
//   GET    /<id>?token=…  upgrade: "ok" admits the client and adds it to the
//                         presence list; anything else refuses (401 here).
//                         "ok" carries Wsbridge-Set-Meta-Name: the user's
//                         name, which wsbridge then sends back on every
//                         later call of the connection as Wsbridge-Meta-Name
//                         (connection metadata, DESIGN.md §8.5), and
//                         Wsbridge-Subscribe: room:lobby, which puts the
//                         connection in the room's channel (§8.1)
//   POST   /<id>          one message from the client: {"type":"hello"} is
//                         answered with the presence list (the reply goes back
//                         to that client only); {"text":"…"} is published to
//                         the room's channel with one admin call (the bridge
//                         writes it to every member), "from" the name in
//                         Wsbridge-Meta-Name
//   DELETE /<id>          the connection ended: removes the client, but only
//                         if Wsbridge-Connection-Id is the one its GET stored
//
// Configuration (environment):
//
//   WSBRIDGE_ADMIN        admin API base URL (default http://127.0.0.1:7002)
//   WSBRIDGE_ADMIN_TOKEN  sent as "Authorization: Bearer …" if set
//   STATE_DIR             where presence.json lives (default <tmp>/wsbridge-chat)
//   CHAT_TOKEN            the demo secret in ?token= (default "letmein")
//
// Presence is a JSON file guarded by flock(2), so several PHP workers
// (PHP_CLI_SERVER_WORKERS, PHP-FPM) can share it. Publishes use
// file_get_contents() with an http stream context: the curl extension is not
// part of php-cli, and shelling out would cost a process per call.

declare(strict_types=1);

const DEFAULT_TOKEN = 'letmein';
const MAX_TEXT = 1000; // characters kept of one chat message
const PUSH_TIMEOUT = 2.0; // seconds per admin call; a draining bridge must not stall us
const ROOM = 'room:lobby'; // the chat's one room: a wsbridge channel

/** respond ends the request with a status and a plain-text body. */
function respond(int $status, string $body = '', string $type = 'text/plain; charset=utf-8'): void
{
    http_response_code($status);
    if ($body !== '') {
        header("Content-Type: $type");
        echo $body;
    }
}

/** valid_client_id mirrors the bridge's ClientId rule (DESIGN.md §4). */
function valid_client_id(string $id): bool
{
    return $id !== '.' && $id !== '..' && preg_match('/^[A-Za-z0-9._~-]{1,128}$/D', $id) === 1;
}

function handle_api(string $method, string $id): void
{
    $conn = $_SERVER['HTTP_WSBRIDGE_CONNECTION_ID'] ?? '';
    switch ($method) {
        case 'GET':
            on_connect($id, $conn);
            return;
        case 'POST':
            // The name the GET admitted comes back with every message: no
            // session lookup. Without it (a bridge without metadata), the id.
            $name = $_SERVER['HTTP_WSBRIDGE_META_NAME'] ?? '';
            on_message($name !== '' ? $name : $id, (string) file_get_contents('php://input'));
            return;
        case 'DELETE':
            on_close($id, $conn);
            return;
    }
    header('Allow: GET, POST, DELETE');
    respond(405, "method not allowed\n");
}

function on_connect(string $id, string $conn): void
{
    $want = getenv('CHAT_TOKEN') ?: DEFAULT_TOKEN;
    $got = $_GET['token'] ?? '';
    if (!is_string($got) || !hash_equals($want, $got)) {
        // wsbridge relays a 4xx status and body to the client's upgrade.
        header('WWW-Authenticate: Token realm="wsbridge-chat"');
        respond(401, "bad or missing token\n");
        return;
    }
    if ($conn === '') {
        respond(400, "missing Wsbridge-Connection-Id: call through wsbridge\n");
        return;
    }
    $presence = update_presence(function (array &$clients) use ($id, $conn): void {
        // A reconnect or a replacement (Wsbridge-Replaces) overwrites the
        // entry; the old connection's DELETE then no longer matches.
        $clients[$id] = ['connection_id' => $conn, 'since' => time()];
    });
    // The newcomer is not open (nor in the room) until we answer "ok", and
    // a connection it replaces is excluded; it asks for the list with
    // {"type":"hello"} once connected.
    broadcast($presence + ['joined' => $id], $id);
    // The user's name is the ClientId the token admitted (a ClientId is
    // visible ASCII, as a metadata value must be).
    header("Wsbridge-Set-Meta-Name: $id");
    // Into the room: the bridge subscribes the connection once it is open,
    // and drops the subscription when it ends.
    header('Wsbridge-Subscribe: ' . ROOM);
    respond(200, 'ok');
}

/** on_message handles one message of the user named $from. */
function on_message(string $from, string $body): void
{
    $msg = json_decode($body, true);
    if (!is_array($msg)) {
        $msg = ['text' => $body]; // plain text from a hand-written client
    }
    if (($msg['type'] ?? '') === 'hello') {
        respond(200, json_encode(update_presence(null)), 'application/json');
        return;
    }
    $text = trim(is_string($msg['text'] ?? null) ? $msg['text'] : '');
    if ($text === '') {
        respond(204);
        return;
    }
    $cut = @iconv_substr($text, 0, MAX_TEXT, 'UTF-8');
    $text = is_string($cut) ? $cut : $text;
    // The sender gets its own message through the same publish, so every
    // client shows the order the backend saw. Nothing is replied directly.
    broadcast([
        'type' => 'message',
        'from' => $from,
        'text' => $text,
        'ts' => (int) floor(microtime(true) * 1000),
    ]);
    respond(204);
}

function on_close(string $id, string $conn): void
{
    $code = $_SERVER['HTTP_WSBRIDGE_CLOSE_CODE'] ?? '';
    $removed = false;
    $presence = update_presence(function (array &$clients) use ($id, $conn, &$removed): void {
        // A DELETE for a connection that has been replaced (or that follows a
        // reconnect it raced with) must not remove the newer one.
        if (isset($clients[$id]) && $clients[$id]['connection_id'] === $conn) {
            unset($clients[$id]);
            $removed = true;
        }
    });
    if (!$removed) {
        error_log("chat: stale DELETE /$id (connection $conn, code $code) ignored");
        respond(200, 'stale');
        return;
    }
    broadcast($presence + ['left' => $id]);
    respond(200, 'ok');
}

function state_file(): string
{
    $dir = getenv('STATE_DIR') ?: sys_get_temp_dir() . '/wsbridge-chat';
    if (!is_dir($dir) && !@mkdir($dir, 0700, true) && !is_dir($dir)) {
        throw new RuntimeException("cannot create STATE_DIR $dir");
    }
    return "$dir/presence.json";
}

/**
 * update_presence runs $change (if any) on the map of present clients under
 * an exclusive lock and, if that changed it, saves it with the revision
 * bumped. It returns the
 * presence event: {"type":"presence","rev":n,"users":[sorted ids]}.
 *
 * The file is {"rev":n,"clients":{"<id>":{"connection_id":"…","since":unix}}}.
 * Pages drop a presence event older than one they have seen, because a
 * hello reply and a push can reach a client in either order.
 *
 * @param null|callable(array<string,array{connection_id:string,since:int}>&):void $change
 * @return array{type:string,rev:int,users:list<string>}
 */
function update_presence(?callable $change): array
{
    $fh = fopen(state_file(), 'c+');
    if ($fh === false || !flock($fh, $change === null ? LOCK_SH : LOCK_EX)) {
        throw new RuntimeException('cannot open or lock presence.json');
    }
    try {
        $state = json_decode((string) stream_get_contents($fh), true);
        $rev = is_int($state['rev'] ?? null) ? $state['rev'] : 0;
        $clients = is_array($state['clients'] ?? null) ? $state['clients'] : [];
        $before = $clients;
        if ($change !== null) {
            $change($clients);
        }
        if ($clients !== $before) {
            $rev++;
            $json = json_encode(['rev' => $rev, 'clients' => (object) $clients], JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES);
            ftruncate($fh, 0);
            rewind($fh);
            fwrite($fh, $json);
            fflush($fh);
        }
    } finally {
        flock($fh, LOCK_UN);
        fclose($fh);
    }
    $users = array_map('strval', array_keys($clients));
    sort($users, SORT_STRING);
    return ['type' => 'presence', 'rev' => $rev, 'users' => $users];
}

/**
 * broadcast publishes $event as JSON to the room's channel, skipping the
 * connection of ClientId $except: one admin call whatever the room's size
 * (the bridge frames it once and writes it to every member). Nothing is
 * sent when no one else is present. Failures are logged, not fatal.
 *
 * @param array<string,mixed> $event
 */
function broadcast(array $event, string $except = ''): void
{
    $others = array_diff($event['users'] ?? update_presence(null)['users'], [$except]);
    if (count($others) === 0) {
        return;
    }
    $body = json_encode($event, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE);
    $path = 'channel/' . ROOM . ($except !== '' ? '?exclude=' . rawurlencode($except) : '');
    $status = admin_post($path, $body);
    if ($status < 200 || $status > 299) {
        error_log("chat: publish to " . ROOM . ': ' . ($status === 0 ? 'admin API unreachable' : "status $status"));
    }
}

/** admin_post POSTs a text body to the bridge's admin API; it returns the status (0: unreachable). */
function admin_post(string $path, string $body): int
{
    $admin = rtrim(getenv('WSBRIDGE_ADMIN') ?: 'http://127.0.0.1:7002', '/');
    $headers = ["Content-Type: text/plain; charset=utf-8"];
    $token = getenv('WSBRIDGE_ADMIN_TOKEN');
    if ($token) {
        $headers[] = "Authorization: Bearer $token";
    }
    $ctx = stream_context_create(['http' => [
        'method' => 'POST',
        'header' => $headers,
        'content' => $body,
        'timeout' => PUSH_TIMEOUT,
        'ignore_errors' => true, // give us 4xx/5xx bodies instead of false
    ]]);
    $reply = @file_get_contents("$admin/$path", false, $ctx);
    if ($reply === false || !isset($http_response_header[0])) {
        return 0;
    }
    return preg_match('{^HTTP/\S+\s+(\d{3})}', $http_response_header[0], $m) === 1 ? (int) $m[1] : 0;
}
