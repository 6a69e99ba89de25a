"""XChaCha20-Poly1305 through libsodium (PyNaCl): the one cipher bakelite seals objects with.

Every sealed message is ``nonce (24 random bytes) | ciphertext | tag (16 bytes)``.  A 192-bit random
nonce per message makes nonce reuse a non-issue however many frames one key seals, so no counter
state has to survive restarts.  Nothing here is hand-written cryptography: encryption,
authentication and randomness all come from libsodium; the key id is a keyed BLAKE3 hash.
"""

from __future__ import annotations

import blake3
import nacl.bindings as sodium
import nacl.exceptions
import nacl.utils

from bakelite.errors import EncryptionError

KEY_BYTES = 32
NONCE_BYTES = 24
TAG_BYTES = 16
OVERHEAD = NONCE_BYTES + TAG_BYTES
KEY_ID_BYTES = 8
_KEY_ID_CONTEXT = b"bakelite key id v1"

assert sodium.crypto_aead_xchacha20poly1305_ietf_KEYBYTES == KEY_BYTES
assert sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES == NONCE_BYTES
assert sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES == TAG_BYTES


def key_id(key: bytes) -> str:
    """A short public name for ``key`` (hex of a keyed BLAKE3 hash): tells keys apart, reveals nothing."""
    if len(key) != KEY_BYTES:
        raise ValueError(f"a key is {KEY_BYTES} bytes, not {len(key)}")
    return blake3.blake3(_KEY_ID_CONTEXT, key=key).digest(length=KEY_ID_BYTES).hex()


class XChaCha20Poly1305:
    """A ``FrameCipher``: seals and opens messages with one 256-bit key and associated data."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a key is {KEY_BYTES} bytes, not {len(key)}")
        self._key = bytes(key)
        self.key_id = key_id(self._key)

    def __repr__(self) -> str:
        return f"XChaCha20Poly1305(key_id={self.key_id})"

    def seal(self, plaintext: bytes, ad: bytes) -> bytes:
        """Encrypt and authenticate ``plaintext`` bound to ``ad``; a fresh random nonce is prepended."""
        nonce = nacl.utils.random(NONCE_BYTES)
        sealed: bytes = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
            bytes(plaintext), ad, nonce, self._key
        )
        return nonce + sealed

    def open(self, ciphertext: bytes, ad: bytes) -> bytes:
        """Authenticate and decrypt; EncryptionError if the key, the bytes or ``ad`` do not match."""
        if len(ciphertext) < OVERHEAD:
            raise EncryptionError(f"sealed data is too short ({len(ciphertext)} bytes)")
        nonce, body = ciphertext[:NONCE_BYTES], ciphertext[NONCE_BYTES:]
        try:
            plain: bytes = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(body, ad, nonce, self._key)
        except nacl.exceptions.CryptoError as e:
            raise EncryptionError("authentication failed: wrong key, or altered or moved data") from e
        return plain
