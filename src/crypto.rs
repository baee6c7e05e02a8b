//! Encryption at rest for private keys and ACME account credentials.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Key, Nonce};

const NONCE_LEN: usize = 12;

/// AES-256-GCM with a fresh random nonce per message, stored as
/// `nonce || ciphertext+tag`.
#[derive(Clone)]
pub struct Cipher(Aes256Gcm);

#[derive(Debug, thiserror::Error)]
#[error("stored secret cannot be decrypted: wrong DATABASE_ENCRYPTION_KEY or corrupt data")]
pub struct DecryptError;

impl Cipher {
    pub fn new(key: &[u8; 32]) -> Cipher {
        Cipher(Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key)))
    }

    pub fn encrypt(&self, plaintext: &[u8]) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let mut out = nonce.to_vec();
        out.extend(
            self.0
                .encrypt(&nonce, plaintext)
                .expect("AES-GCM encryption of an in-memory buffer cannot fail"),
        );
        out
    }

    pub fn decrypt(&self, stored: &[u8]) -> Result<Vec<u8>, DecryptError> {
        if stored.len() < NONCE_LEN {
            return Err(DecryptError);
        }
        let (nonce, ciphertext) = stored.split_at(NONCE_LEN);
        self.0
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| DecryptError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let cipher = Cipher::new(&[7; 32]);
        let sealed = cipher.encrypt(b"-----BEGIN PRIVATE KEY-----");
        assert!(!sealed.windows(5).any(|w| w == b"BEGIN"));
        assert_eq!(
            cipher.decrypt(&sealed).unwrap(),
            b"-----BEGIN PRIVATE KEY-----"
        );
        assert_ne!(cipher.encrypt(b"x"), cipher.encrypt(b"x"), "nonces repeat");
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(cipher.decrypt(&tampered).is_err());
        assert!(Cipher::new(&[8; 32]).decrypt(&sealed).is_err());
        assert!(cipher.decrypt(b"short").is_err());
    }
}
