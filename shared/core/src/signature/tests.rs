use super::*;

fn key(byte: u8) -> SigningKey {
    SigningKey::from_slice(&[byte; 32]).unwrap()
}

#[test]
fn known_address_of_private_key_one() {
    // The well-known address of secp256k1 private key 0x…01.
    let mut sk = [0u8; 32];
    sk[31] = 1;
    let key = SigningKey::from_slice(&sk).unwrap();
    assert_eq!(address_of(key.verifying_key()), "0x7e5f4552091a69125d5dfcb7b8c2659029395bdf");
}

#[test]
fn known_personal_sign_hash() {
    // keccak256("\x19Ethereum Signed Message:\n11hello world"), as ethers/web3 compute it.
    assert_eq!(
        hex::encode(eip191_hash(b"hello world")),
        "d9eba16ed0ecae432b71fe008c98cc872bb4cc214d3220a36f365326cf807d68"
    );
}

#[test]
fn sign_then_recover_round_trips() {
    let k = key(7);
    let addr = address_of(k.verifying_key());
    let sig = sign_personal(&k, b"{\"a\":1}");
    assert_eq!(recover_personal(b"{\"a\":1}", &sig).unwrap(), addr);
    assert!(verify_entry(
        b"{\"a\":1}",
        Some(&sig),
        &addr.to_uppercase().replace("0X", "0x"),
        SignaturePolicy::Required
    )
    .unwrap());
}

#[test]
fn policy_table() {
    let k = key(7);
    let addr = address_of(k.verifying_key());
    let other = address_of(key(8).verifying_key());
    let sig = sign_personal(&k, b"data");
    // (signature, claimed wallet, policy, expected verdict)
    type Row<'a> = (Option<&'a str>, &'a str, SignaturePolicy, Result<bool, Reason>);
    let table: Vec<Row> = vec![
        (Some(&sig), &addr, SignaturePolicy::Required, Ok(true)),
        (Some(&sig), &addr, SignaturePolicy::Optional, Ok(true)),
        (None, &addr, SignaturePolicy::Optional, Ok(false)),
        (None, &addr, SignaturePolicy::Required, Err(Reason::SignatureMissing)),
        (Some(&sig), &other, SignaturePolicy::Optional, Err(Reason::SignatureMismatch)),
        (Some("0x1234"), &addr, SignaturePolicy::Optional, Err(Reason::SignatureMalformed)),
        (Some("zz"), &addr, SignaturePolicy::Required, Err(Reason::SignatureMalformed)),
    ];
    for (s, w, p, want) in table {
        assert_eq!(verify_entry(b"data", s, w, p).map_err(|r| r.reason), want, "{s:?} {p:?}");
    }
    // One changed byte of data: the signature no longer matches.
    assert_eq!(
        verify_entry(b"datA", Some(&sig), &addr, SignaturePolicy::Required).map_err(|r| r.reason),
        Err(Reason::SignatureMismatch)
    );
}

/// SplitMix64: a reproducible stream of test bytes.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn key(&mut self) -> SigningKey {
        loop {
            if let Ok(k) = SigningKey::from_slice(&self.bytes(32)) {
                return k;
            }
        }
    }
}

fn both(message: &[u8], sig: &str) -> [Result<String, Reason>; 2] {
    [Backend::Libsecp256k1, Backend::K256].map(|b| recover_personal_with(b, message, sig).map_err(|r| r.reason))
}

/// n − s, big-endian.
fn negate(s: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = i16::from(ORDER[i]) - i16::from(s[i]) - borrow;
        borrow = i16::from(d < 0);
        out[i] = (d + 256 * borrow) as u8;
    }
    out
}

#[test]
fn backends_recover_the_same_address_from_k256_signatures() {
    let mut rng = Rng(0x5eed);
    for i in 0..200 {
        let k = rng.key();
        let addr = address_of(k.verifying_key());
        let len = (rng.next() % 600) as usize;
        let msg = rng.bytes(len);
        let sig = sign_personal(&k, &msg);
        assert_eq!(both(&msg, &sig), [Ok(addr.clone()), Ok(addr.clone())], "case {i}");
        // The same signature as v = 0/1, without `0x`, in upper case.
        let mut raw = hex::decode(&sig[2..]).unwrap();
        raw[64] -= 27;
        let bare = hex::encode_upper(&raw);
        assert_eq!(both(&msg, &bare), [Ok(addr.clone()), Ok(addr.clone())], "case {i}, v 0/1");
        // High s with flipped parity is the same signature.
        let high = negate(&raw[32..64]);
        raw[32..64].copy_from_slice(&high);
        raw[64] ^= 1;
        let high_sig = format!("0x{}", hex::encode(&raw));
        assert_eq!(both(&msg, &high_sig), [Ok(addr.clone()), Ok(addr.clone())], "case {i}, high s");
        // Wrong parity, or another message: some other key, the same one for both.
        raw[64] ^= 1;
        let [a, b] = both(&msg, &hex::encode(&raw));
        assert_eq!(a, b, "case {i}, flipped parity");
        assert_ne!(a, Ok(addr.clone()));
        let [a, b] = both(b"another message", &sig);
        assert_eq!(a, b, "case {i}, other message");
        assert_ne!(a, Ok(addr));
    }
}

#[test]
fn backends_agree_on_arbitrary_signatures() {
    let mut rng = Rng(42);
    let (mut recovered, mut unrecoverable) = (0, 0);
    for i in 0..600 {
        let mut raw = rng.bytes(65);
        raw[64] = [0, 1, 27, 28][i % 4];
        let sig = hex::encode(&raw);
        let [a, b] = both(b"data", &sig);
        assert_eq!(a, b, "{sig}");
        match a {
            Ok(_) => recovered += 1,
            Err(Reason::SignatureMismatch) => unrecoverable += 1,
            Err(other) => panic!("{sig}: {other:?}"),
        }
    }
    // About half of all x are on the curve: both outcomes were exercised.
    assert!(recovered > 100 && unrecoverable > 100, "{recovered} {unrecoverable}");
}

#[test]
fn backends_refuse_malformed_signatures_alike() {
    let k = key(9);
    let good = hex::decode(&sign_personal(&k, b"m")[2..]).unwrap();
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut raw = good.clone();
        f(&mut raw);
        format!("0x{}", hex::encode(raw))
    };
    let n_minus_1 = negate(&{
        let mut one = [0u8; 32];
        one[31] = 1;
        one
    });
    let malformed = [
        String::new(),
        "0x".into(),
        "0x1234".into(),
        "zz".into(),
        format!("0x{}", "g".repeat(130)),
        format!("{}0", with(&|_| {})), // 131 digits
        with(&|r| r.truncate(64)),
        with(&|r| r.push(0)),
        with(&|r| r[64] = 2),
        with(&|r| r[64] = 3),
        with(&|r| r[64] = 26),
        with(&|r| r[64] = 29),
        with(&|r| r[64] = 255),
        with(&|r| r[..32].fill(0)),                   // r = 0
        with(&|r| r[32..64].fill(0)),                 // s = 0
        with(&|r| r[..32].copy_from_slice(&ORDER)),   // r = n
        with(&|r| r[32..64].copy_from_slice(&ORDER)), // s = n
        with(&|r| r[..32].fill(0xff)),                // r > n
        with(&|r| r[32..64].fill(0xff)),              // s > n
    ];
    for sig in &malformed {
        assert_eq!(
            both(b"m", sig),
            [Err(Reason::SignatureMalformed), Err(Reason::SignatureMalformed)],
            "{sig:?}"
        );
    }
    // The edges of the range are well-formed: s = n − 1 and r = 1 parse (and recover alike).
    for sig in [
        with(&|r| r[32..64].copy_from_slice(&n_minus_1)),
        with(&|r| {
            r[..32].fill(0);
            r[31] = 1;
        }),
    ] {
        let [a, b] = both(b"m", &sig);
        assert_eq!(a, b, "{sig}");
        assert_ne!(a, Err(Reason::SignatureMalformed), "{sig}");
    }
}

#[test]
fn eip191_hash_counts_lengths_in_decimal() {
    for len in [0usize, 1, 9, 10, 99, 100, 12345] {
        let msg = vec![b'x'; len];
        let mut want = Keccak256::new();
        want.update(format!("\x19Ethereum Signed Message:\n{len}").as_bytes());
        want.update(&msg);
        assert_eq!(eip191_hash(&msg), <[u8; 32]>::from(want.finalize()), "{len}");
    }
}
