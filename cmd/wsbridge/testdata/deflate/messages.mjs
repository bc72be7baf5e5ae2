// The messages the node and browser clients send (as client.py's messages()).
export function messages() {
  let big = '';
  for (let i = 0; i < 200; i++) big += `{"id":${i},"user":"user-${i % 7}","text":"hello, world"},`;
  const bin1 = new Uint8Array(3000).map((_, i) => i % 3);
  const bin2 = new Uint8Array(256 * 400).map((_, i) => i % 256);
  return ['hi', big, bin1, bin2, big.repeat(10)];
}
