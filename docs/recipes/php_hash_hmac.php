<?php
// A webhook receiver in plain PHP (Debian's php-cli): verifies X-Bjet24-Signature.
//
//   WEBHOOK_SECRET=whsec_... php -S 127.0.0.1:9000 php_hash_hmac.php
//
// Behind any web server, the same code works as the endpoint's script. Answers 200
// (processed, or a duplicate), 400 (header missing or malformed, timestamp more than 5
// minutes away) or 401 (no signature matches). Keep processed event ids in your database:
// this sketch marks them with directories under WEBHOOK_STATE_DIR (default: the system's
// temporary directory).

$secret = getenv('WEBHOOK_SECRET');            // the whole string, whsec_ included
$tolerance = 300;
$raw = file_get_contents('php://input');      // the raw body: the signature covers these bytes
$header = $_SERVER['HTTP_X_BJET24_SIGNATURE'] ?? '';

function answer(int $status, string $text): void
{
    http_response_code($status);
    header('Content-Type: text/plain');
    echo $text;
}

function log_line(string $line): void
{
    file_put_contents('php://stderr', $line . "\n");
}

$timestamp = null;
$signatures = [];
foreach (explode(',', $header) as $item) {
    $pair = explode('=', trim($item), 2);
    if (count($pair) !== 2) {
        continue;
    }
    if ($pair[0] === 't' && ctype_digit($pair[1])) {
        $timestamp = (int) $pair[1];
    } elseif ($pair[0] === 'v1') {
        $signatures[] = $pair[1];             // several during a secret rotation: any may match
    }
}
if ($timestamp === null || !$signatures || abs(time() - $timestamp) > $tolerance) {
    answer(400, 'signature header missing, malformed or stale');
    return;
}
$expected = hash_hmac('sha256', $timestamp . '.' . $raw, $secret);
$matched = false;
foreach ($signatures as $signature) {
    $matched = hash_equals($expected, $signature) || $matched;   // constant time
}
if (!$matched) {
    answer(401, 'signature refused');
    return;
}

$event = json_decode($raw, true);
$state = getenv('WEBHOOK_STATE_DIR') ?: sys_get_temp_dir();
$seen = $state . '/webhook-seen-' . hash('sha256', $event['event_id']);
if (!@mkdir($seen)) {                          // atomic: only the first copy creates it
    log_line('duplicate ' . $event['event_id']);
    answer(200, 'duplicate');
    return;
}
log_line('processed ' . $event['event_id'] . ' ' . $event['event_type']);
answer(200, 'ok');
