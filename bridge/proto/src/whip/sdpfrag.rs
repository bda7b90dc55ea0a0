//! `application/trickle-ice-sdpfrag` (RFC 8840) as WHIP uses it (RFC 9725 §4.3).
//!
//! Clients differ in where they put things: browsers' WHIP libraries put `ice-ufrag`/`ice-pwd` at
//! session level, simple-whip-client sends `m=audio` with the video's mid, ffmpeg and aiortc never
//! PATCH at all. So the parser keeps what matters (credentials, candidates with their mid,
//! end-of-candidates) and matches by `a=mid`, never by the media type of the `m=` line.

use std::fmt::Write as _;
use std::net::IpAddr;

/// ICE credentials of one side of an ICE session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceCredentials {
    /// `a=ice-ufrag`
    pub ufrag: String,
    /// `a=ice-pwd`
    pub pwd: String,
}

/// Why a fragment was refused (answered 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SdpFragError {
    /// The body is not UTF-8.
    #[error("sdpfrag is not UTF-8")]
    NotUtf8,
    /// A line is not `<letter>=<value>`.
    #[error("sdpfrag line {line}: not an SDP line")]
    BadLine {
        /// 1-based line number.
        line: usize,
    },
    /// Only one of ice-ufrag / ice-pwd was given.
    #[error("sdpfrag has ice-ufrag without ice-pwd or the reverse")]
    HalfCredentials,
    /// ice-ufrag or ice-pwd breaks RFC 8839 §5.4 (length, characters).
    #[error("sdpfrag {attribute} must be {min} to 256 of A-Z a-z 0-9 + / (RFC 8839)")]
    BadCredentials {
        /// `ice-ufrag` or `ice-pwd`.
        attribute: &'static str,
        /// Its shortest legal length.
        min: usize,
    },
    /// A candidate line cannot be parsed.
    #[error("sdpfrag line {line}: malformed candidate: {reason}")]
    BadCandidate {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// One usable remote candidate, as received (`candidate:...` without the `a=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The mid of the media section it came in, if any.
    pub mid: Option<String>,
    /// The attribute value, `candidate:<foundation> <component> udp ...`.
    pub line: String,
    /// Identity for idempotence: component, transport, address, port, type. Two lines that differ
    /// only in foundation, priority or extensions name the same candidate.
    pub key: String,
}

/// A parsed fragment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SdpFrag {
    /// Credentials if the fragment carried them (media level wins over session level).
    pub credentials: Option<IceCredentials>,
    /// UDP candidates with an IP address; TCP and mDNS (`.local`) candidates are already dropped.
    pub candidates: Vec<Candidate>,
    /// Candidates that were dropped as unsupported (TCP, mDNS, other transports).
    pub dropped: usize,
    /// `a=end-of-candidates` was present.
    pub end_of_candidates: bool,
}

enum Parsed {
    Usable(String),
    Unsupported,
}

/// Checks a candidate value (after `candidate:`) and returns its identity key, or `Unsupported`
/// for candidates the bridge cannot use (RFC 9725 §4.3.1: dropped, not an error).
fn parse_candidate(value: &str) -> Result<Parsed, &'static str> {
    let mut fields = value.split_ascii_whitespace();
    let _foundation = fields.next().ok_or("no foundation")?;
    let component = fields.next().ok_or("no component")?;
    component
        .parse::<u16>()
        .map_err(|_| "component is not a number")?;
    let transport = fields.next().ok_or("no transport")?;
    let priority = fields.next().ok_or("no priority")?;
    priority
        .parse::<u32>()
        .map_err(|_| "priority is not a number")?;
    let address = fields.next().ok_or("no address")?;
    let port = fields.next().ok_or("no port")?;
    port.parse::<u16>().map_err(|_| "port is not a number")?;
    if fields.next() != Some("typ") {
        return Err("no typ");
    }
    let typ = fields.next().ok_or("no candidate type")?;
    if !transport.eq_ignore_ascii_case("udp") || address.parse::<IpAddr>().is_err() {
        return Ok(Parsed::Unsupported);
    }
    Ok(Parsed::Usable(format!(
        "{component} udp {address} {port} {typ}"
    )))
}

impl SdpFrag {
    /// Parses a fragment body.
    pub fn parse(body: &[u8]) -> Result<Self, SdpFragError> {
        let text = std::str::from_utf8(body).map_err(|_| SdpFragError::NotUtf8)?;
        let mut frag = SdpFrag::default();
        let (mut session_ufrag, mut session_pwd) = (None, None);
        let (mut media_ufrag, mut media_pwd) = (None, None);
        let mut in_media = false;
        let mut mid: Option<String> = None;
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = raw.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let (kind, value) = line
                .split_once('=')
                .filter(|(k, _)| k.len() == 1)
                .ok_or(SdpFragError::BadLine { line: line_no })?;
            match kind {
                "m" => {
                    in_media = true;
                    mid = None;
                }
                "a" => {
                    let (key, val) = value.split_once(':').unwrap_or((value, ""));
                    match key {
                        "mid" => mid = Some(val.to_owned()),
                        "ice-ufrag" if in_media => media_ufrag = Some(val.to_owned()),
                        "ice-pwd" if in_media => media_pwd = Some(val.to_owned()),
                        "ice-ufrag" => session_ufrag = Some(val.to_owned()),
                        "ice-pwd" => session_pwd = Some(val.to_owned()),
                        "end-of-candidates" => frag.end_of_candidates = true,
                        "candidate" => match parse_candidate(val) {
                            Ok(Parsed::Usable(key)) => frag.candidates.push(Candidate {
                                mid: mid.clone(),
                                line: value.to_owned(),
                                key,
                            }),
                            Ok(Parsed::Unsupported) => frag.dropped += 1,
                            Err(reason) => {
                                return Err(SdpFragError::BadCandidate {
                                    line: line_no,
                                    reason,
                                });
                            }
                        },
                        _ => {}
                    }
                }
                // Other SDP lines (v=, o=, c=...) may appear in sloppy fragments; they carry nothing
                // trickle needs.
                _ => {}
            }
        }
        let ufrag = media_ufrag.or(session_ufrag);
        let pwd = media_pwd.or(session_pwd);
        frag.credentials = match (ufrag, pwd) {
            (Some(ufrag), Some(pwd)) => {
                // An empty or odd password would reach the ICE agent, which keys STUN integrity
                // on it: refuse it here with a reason instead.
                check_ice_chars("ice-ufrag", &ufrag, 4)?;
                check_ice_chars("ice-pwd", &pwd, 22)?;
                Some(IceCredentials { ufrag, pwd })
            }
            (None, None) => None,
            _ => return Err(SdpFragError::HalfCredentials),
        };
        Ok(frag)
    }
}

/// `ice-ufrag = 4*256ice-char`, `ice-pwd = 22*256ice-char`, `ice-char = ALPHA / DIGIT / "+" / "/"`.
fn check_ice_chars(attribute: &'static str, value: &str, min: usize) -> Result<(), SdpFragError> {
    let ok = (min..=256).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if ok {
        Ok(())
    } else {
        Err(SdpFragError::BadCredentials { attribute, min })
    }
}

/// Writes the fragment a server answers an ICE restart with (RFC 9725 §4.3.2): the new local
/// credentials and all local candidates, in the first bundled media section.
pub fn write_restart_answer(
    mid: &str,
    credentials: &IceCredentials,
    candidates: &[String],
) -> String {
    let mut out = String::with_capacity(256);
    // write! to a String cannot fail.
    let _ = write!(
        out,
        "a=ice-options:trickle\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:{mid}\r\na=ice-ufrag:{}\r\na=ice-pwd:{}\r\n",
        credentials.ufrag, credentials.pwd
    );
    for candidate in candidates {
        let _ = write!(out, "a={candidate}\r\n");
    }
    out.push_str("a=end-of-candidates\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browser_library_shape_with_session_level_credentials() {
        let body =
            b"a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\na=group:BUNDLE 0 1\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n\
a=candidate:1387637174 1 udp 2122260223 10.77.0.2 58779 typ host generation 0 ufrag EsAw\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:1\r\n";
        let frag = SdpFrag::parse(body).unwrap();
        assert_eq!(
            frag.credentials,
            Some(IceCredentials {
                ufrag: "EsAw".into(),
                pwd: "P2uYro0UCOQ4zxjKXaWCBui1".into()
            })
        );
        assert_eq!(frag.candidates.len(), 1);
        assert_eq!(frag.candidates[0].mid.as_deref(), Some("0"));
        assert_eq!(frag.candidates[0].key, "1 udp 10.77.0.2 58779 host");
        assert!(!frag.end_of_candidates);
    }

    #[test]
    fn media_level_credentials_win_and_mid_not_media_type_is_kept() {
        // simple-whip-client: `m=audio` carrying the video's mid.
        let body = b"a=ice-ufrag:sess\na=ice-pwd:sesspwd0123456789abcdef\nm=audio 9 UDP/TLS/RTP/SAVPF 0\na=mid:video0\n\
a=ice-ufrag:medi\na=ice-pwd:medpwd0123456789abcdefg\na=candidate:1 1 UDP 2015363327 10.0.0.1 40000 typ host\na=end-of-candidates\n";
        let frag = SdpFrag::parse(body).unwrap();
        let creds = frag.credentials.unwrap();
        assert_eq!(
            (creds.ufrag.as_str(), creds.pwd.as_str()),
            ("medi", "medpwd0123456789abcdefg")
        );
        assert_eq!(frag.candidates[0].mid.as_deref(), Some("video0"));
        assert!(frag.end_of_candidates);
    }

    #[test]
    fn tcp_and_mdns_candidates_are_dropped_not_errors() {
        let body = b"a=candidate:2 1 tcp 1518280447 10.0.0.1 9 typ host tcptype active\r\n\
a=candidate:3 1 udp 2122260223 4f5a0b1c-aaaa.local 50000 typ host\r\n";
        let frag = SdpFrag::parse(body).unwrap();
        assert!(frag.candidates.is_empty());
        assert_eq!(frag.dropped, 2);
        assert_eq!(frag.credentials, None);
    }

    #[test]
    fn errors_name_the_line() {
        let cases: &[(&[u8], SdpFragError)] = &[
            (b"\xff\xfe", SdpFragError::NotUtf8),
            (b"a=mid:0\r\nnot sdp\r\n", SdpFragError::BadLine { line: 2 }),
            (b"a=ice-ufrag:x\r\n", SdpFragError::HalfCredentials),
            (
                b"a=ice-ufrag\r\na=ice-pwd:0123456789abcdefghijkl\r\n",
                SdpFragError::BadCredentials {
                    attribute: "ice-ufrag",
                    min: 4,
                },
            ),
            (
                b"a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdefghijk\r\n",
                SdpFragError::BadCredentials {
                    attribute: "ice-pwd",
                    min: 22,
                },
            ),
            (
                b"a=ice-ufrag:ab d\r\na=ice-pwd:0123456789abcdefghijkl\r\n",
                SdpFragError::BadCredentials {
                    attribute: "ice-ufrag",
                    min: 4,
                },
            ),
            (
                b"a=candidate:1 1 udp notanumber 1.2.3.4 5 typ host\r\n",
                SdpFragError::BadCandidate {
                    line: 1,
                    reason: "priority is not a number",
                },
            ),
            (
                b"a=candidate:1 1 udp 1 1.2.3.4 5 host\r\n",
                SdpFragError::BadCandidate {
                    line: 1,
                    reason: "no typ",
                },
            ),
            (
                b"a=candidate:1 1 udp 1 1.2.3.4\r\n",
                SdpFragError::BadCandidate {
                    line: 1,
                    reason: "no port",
                },
            ),
        ];
        for (body, want) in cases {
            assert_eq!(SdpFrag::parse(body).unwrap_err(), *want);
        }
    }

    #[test]
    fn restart_answer_round_trips_through_the_parser() {
        let creds = IceCredentials {
            ufrag: "abcd".into(),
            pwd: "0123456789abcdef012345".into(),
        };
        let text = write_restart_answer(
            "0",
            &creds,
            &["candidate:1 1 udp 2130706431 127.0.0.1 8189 typ host".into()],
        );
        let frag = SdpFrag::parse(text.as_bytes()).unwrap();
        assert_eq!(frag.credentials, Some(creds));
        assert_eq!(frag.candidates.len(), 1);
        assert!(frag.end_of_candidates);
    }
}
