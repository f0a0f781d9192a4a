<?php
// Posts and verifies exactly as getkeymanager/php-sdk 3.x does (Http\HttpClient::request and ::verifyResponse,
// called by LicenseManager::createLicenseKeyMeta/updateLicenseKeyMeta/deleteLicenseKeyMeta).
// Usage: php client.php BASE_URL API_KEY PUBLIC_KEY_PEM_FILE CALLS_JSON_FILE
// Prints one JSON line per call: {"operation","http","code","scheme","verified","tampered_verified"}.
declare(strict_types=1);

[$_, $baseUrl, $apiKey, $pemFile, $callsFile] = $argv;
$publicKey = openssl_pkey_get_public(file_get_contents($pemFile));
if ($publicKey === false) {
    fwrite(STDERR, "unreadable public key\n");
    exit(2);
}
$calls = json_decode(file_get_contents($callsFile), true, 512, JSON_THROW_ON_ERROR);

function sdk_verify(array $response, $publicKey): bool
{
    $signature = $response['signature'];
    unset($response['signature']);
    $payload = json_encode($response, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE);
    return openssl_verify($payload, base64_decode($signature, true), $publicKey, OPENSSL_ALGO_SHA256) === 1;
}

$failed = false;
foreach ($calls as $call) {
    $data = ['license_key' => $call['license_key'], 'meta_key' => $call['meta_key']];
    if (array_key_exists('meta_value', $call)) {
        $data['meta_value'] = $call['meta_value'];
    }
    $data['api_key'] = $apiKey;  // the SDK adds it to every POST body, beside the Bearer header
    $headers = [
        'Authorization: Bearer ' . $apiKey,
        'Content-Type: application/json',
        'Accept: application/json',
        'User-Agent: GetKeyManager-PHP-SDK/2.0.0',
    ];
    $scheme = null;
    $ch = curl_init($baseUrl . '/api/v1/' . $call['operation'] . '-license-key-meta');
    curl_setopt_array($ch, [
        CURLOPT_RETURNTRANSFER => true,
        CURLOPT_TIMEOUT => 30,
        CURLOPT_HTTPHEADER => $headers,
        CURLOPT_CUSTOMREQUEST => 'POST',
        CURLOPT_POSTFIELDS => json_encode($data),
        CURLOPT_HEADERFUNCTION => function ($ch, $line) use (&$scheme) {
            if (stripos($line, 'x-signature-scheme:') === 0) {
                $scheme = trim(substr($line, strlen('x-signature-scheme:')));
            }
            return strlen($line);
        },
    ]);
    $body = curl_exec($ch);
    $http = curl_getinfo($ch, CURLINFO_HTTP_CODE);
    curl_close($ch);
    if ($body === false) {
        fwrite(STDERR, "network error\n");
        exit(2);
    }
    $response = json_decode($body, true);
    $verified = isset($response['signature']) && sdk_verify($response, $publicKey);
    // The same check on a response altered after signing must fail, or the check proves nothing.
    $tampered = $response;
    $tampered['response']['message'] .= '!';
    $tamperedVerified = isset($tampered['signature']) && sdk_verify($tampered, $publicKey);
    $failed = $failed || !$verified || $tamperedVerified;
    echo json_encode([
        'operation' => $call['operation'], 'http' => $http, 'code' => $response['response']['code'] ?? null,
        'scheme' => $scheme, 'verified' => $verified, 'tampered_verified' => $tamperedVerified,
    ]), "\n";
}
exit($failed ? 1 : 0);
