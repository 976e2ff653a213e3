//! Unpredictable bytes from the operating system, for what a peer must not
//! guess: an agent's route nonce, a job attempt's token.

use std::io::Read as _;

/// Fills `buf` from `/dev/urandom` (the kernel's CSPRNG; it never blocks
/// once the system has booted).
pub fn fill(buf: &mut [u8]) -> std::io::Result<()> {
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

/// 64 random bits.
pub fn u64() -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    fill(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// `n` random bytes as `2n` lowercase hex digits.
pub fn hex(n: usize) -> std::io::Result<String> {
    let mut b = vec![0u8; n];
    fill(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn draws_differ_and_hex_has_two_digits_a_byte() {
        let (a, b) = (super::u64().unwrap(), super::u64().unwrap());
        assert_ne!(a, b, "two 64-bit draws alike");
        let h = super::hex(16).unwrap();
        assert_eq!(h.len(), 32);
        assert!(
            h.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }
}
