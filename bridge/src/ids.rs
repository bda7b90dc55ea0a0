//! Unguessable identifiers: session ids and entity tags.

/// 128 random bits as hex: session ids (unguessable, RFC 9725 §4.2) and entity tags.
pub fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    // The OS random source failing is not something a request can cause or recover from. Rather
    // than panic in a request, fall back to the clock's nanoseconds (guessable, hence the error
    // log: the operator must fix the host).
    if let Err(err) = getrandom::fill(&mut bytes) {
        tracing::error!(%err, "OS random source failed");
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes = t.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_128_bits_of_hex_and_differ() {
        let (a, b) = (super::random_hex(), super::random_hex());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
