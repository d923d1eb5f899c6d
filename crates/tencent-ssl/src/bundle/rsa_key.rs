//! RSA private keys (PKCS#1 `RSAPrivateKey`, bare or inside PKCS#8): parsed with the `pkcs1` crate and checked
//! by arithmetic on their components, without the `rsa` crate (RUSTSEC-2023-0071 flags it in every scanner,
//! though the operator never decrypts).
//!
//! The check accepts what the `rsa` crate accepted before (any two-prime key from 1024 to 16384 bits, any odd
//! exponent from 3 up to 2^33), and adds the CRT values: the operator now stores the key's own bytes rather
//! than a re-encoding, and servers sign with dP, dQ and qInv, so those must be right too. ring's validator was
//! the alternative; it takes only 2048-4096-bit keys with 512-bit-multiple primes and e >= 65537, and would
//! have refused 1024-bit, 8192-bit and e = 3 keys that ingress controllers serve.

use num_bigint::BigUint;

use super::key::MalformedKey;

/// Smallest RSA modulus accepted; Go's crypto/tls (Traefik, Envoy Gateway's control plane) refuses less.
pub(crate) const MIN_RSA_BITS: u64 = 1024;
/// Largest RSA modulus accepted: bounds the cost of checking a hostile key (Tencent issues up to 4096).
pub(crate) const MAX_RSA_BITS: u64 = 16384;
/// Largest public exponent accepted, as the `rsa` crate and Go's crypto/rsa do (2^33 - 1).
const MAX_PUBLIC_EXPONENT_BITS: u64 = 33;

const NOT_PKCS1: MalformedKey = MalformedKey("it is not a valid PKCS#1 RSA key");
const MULTI_PRIME: MalformedKey = MalformedKey("it is a multi-prime RSA key");
const BAD_EXPONENT: MalformedKey =
    MalformedKey("its public exponent is not an odd number from 3 to 2^33");
const BAD_PRIMES: MalformedKey = MalformedKey("its primes do not multiply to its modulus");
const BAD_PRIVATE_EXPONENT: MalformedKey =
    MalformedKey("its private exponent does not invert its public exponent");
const BAD_CRT: MalformedKey =
    MalformedKey("its CRT values (exponent1, exponent2, coefficient) do not match its primes");

/// What an RSA private key turned out to be.
pub(crate) enum RsaKey {
    /// A consistent key; the modulus and exponent are big-endian without leading zeros.
    Valid { modulus: Vec<u8>, exponent: Vec<u8> },
    /// A key outside the accepted sizes; the string says why, for `UnsupportedAlgorithm`.
    Unsupported(String),
}

/// Parses and checks a DER `RSAPrivateKey`.
pub(crate) fn check_pkcs1(der: &[u8]) -> Result<RsaKey, MalformedKey> {
    let key = pkcs1::RsaPrivateKey::try_from(der).map_err(|_| NOT_PKCS1)?;
    if key.version().is_multi() {
        return Err(MULTI_PRIME);
    }
    // Before any arithmetic: a hostile 1 MB modulus is refused by its length alone.
    let declared_bits = u64::try_from(key.modulus.as_bytes().len())
        .unwrap_or(u64::MAX)
        .saturating_mul(8);
    if declared_bits > MAX_RSA_BITS + 8 {
        return Ok(RsaKey::Unsupported(format!(
            "an RSA private key longer than {MAX_RSA_BITS} bits"
        )));
    }
    let components = Components::of(&key)?;
    components.check()?;
    let bits = components.n.bits();
    if bits < MIN_RSA_BITS {
        return Ok(RsaKey::Unsupported(format!(
            "an RSA-{bits} private key (shorter than {MIN_RSA_BITS} bits)"
        )));
    }
    Ok(RsaKey::Valid {
        modulus: components.n.to_bytes_be(),
        exponent: components.e.to_bytes_be(),
    })
}

/// The key's integers. Every one is at most as long as the modulus, so the arithmetic below costs
/// microseconds even on a hostile key.
struct Components {
    n: BigUint,
    e: BigUint,
    d: BigUint,
    p: BigUint,
    q: BigUint,
    d_p: BigUint,
    d_q: BigUint,
    q_inv: BigUint,
}

impl Components {
    fn of(key: &pkcs1::RsaPrivateKey<'_>) -> Result<Self, MalformedKey> {
        let modulus_len = key.modulus.as_bytes().len();
        let read = |value: pkcs1::UintRef<'_>| {
            let bytes = value.as_bytes();
            if bytes.len() > modulus_len {
                return Err(NOT_PKCS1);
            }
            Ok(BigUint::from_bytes_be(bytes))
        };
        Ok(Self {
            n: read(key.modulus)?,
            e: read(key.public_exponent)?,
            d: read(key.private_exponent)?,
            p: read(key.prime1)?,
            q: read(key.prime2)?,
            d_p: read(key.exponent1)?,
            d_q: read(key.exponent2)?,
            q_inv: read(key.coefficient)?,
        })
    }

    /// The checks of the `rsa` crate's `RsaPrivateKey::validate` (n odd, e odd in [3, 2^33), e < n,
    /// p·q = n, d·e ≡ 1 mod p−1 and q−1), then the CRT values against the primes (RFC 8017 §3.2).
    fn check(&self) -> Result<(), MalformedKey> {
        let one = BigUint::from(1u8);
        let three = BigUint::from(3u8);
        if !self.e.bit(0) || self.e < three || self.e.bits() > MAX_PUBLIC_EXPONENT_BITS {
            return Err(BAD_EXPONENT);
        }
        if !self.n.bit(0) || self.e >= self.n {
            return Err(NOT_PKCS1);
        }
        if self.p <= one || self.q <= one || &self.p * &self.q != self.n {
            return Err(BAD_PRIMES);
        }
        let p_1 = &self.p - &one;
        let q_1 = &self.q - &one;
        let de = &self.d * &self.e;
        if &de % &p_1 != one || &de % &q_1 != one {
            return Err(BAD_PRIVATE_EXPONENT);
        }
        let crt_consistent = self.d_p < p_1
            && self.d_q < q_1
            && self.q_inv < self.p
            && (&self.d_p * &self.e) % &p_1 == one
            && (&self.d_q * &self.e) % &q_1 == one
            && (&self.q_inv * &self.q) % &self.p == one;
        if !crt_consistent {
            return Err(BAD_CRT);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use pkcs8::der::Encode as _;

    use super::*;

    /// A PKCS#1 DER private key made by `rsa` (a dev-dependency only: test keys, no decryption).
    fn generated_pkcs1_der(bits: usize) -> Vec<u8> {
        use rsa::pkcs1::EncodeRsaPrivateKey as _;
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits).expect("rsa key");
        key.to_pkcs1_der().expect("pkcs1").as_bytes().to_vec()
    }

    #[test]
    fn accepts_a_generated_key_and_reports_its_public_key() {
        let pkcs1_der = generated_pkcs1_der(1024);
        let structure = pkcs1::RsaPrivateKey::try_from(pkcs1_der.as_slice()).expect("pkcs1");
        let Ok(RsaKey::Valid { modulus, exponent }) = check_pkcs1(&pkcs1_der) else {
            panic!("a generated key is valid");
        };
        assert_eq!(modulus, structure.modulus.as_bytes());
        assert_eq!(exponent, [1, 0, 1]);
    }

    #[test]
    fn refuses_a_component_longer_than_the_modulus() {
        let pkcs1_der = generated_pkcs1_der(1024);
        let structure = pkcs1::RsaPrivateKey::try_from(pkcs1_der.as_slice()).expect("pkcs1");
        let long_d = [&[0x01], structure.modulus.as_bytes()].concat();
        let hostile = pkcs1::RsaPrivateKey {
            private_exponent: pkcs1::UintRef::new(&long_d).expect("uint"),
            ..structure
        };
        let der = hostile.to_der().expect("der");
        assert_eq!(check_pkcs1(&der).err(), Some(NOT_PKCS1));
    }
}
