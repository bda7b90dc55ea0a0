//! Text-level SDP helpers for the WHIP client: building and parsing
//! `application/trickle-ice-sdpfrag` bodies (RFC 8840, as RFC 9725 §4.3 uses them), rewriting the
//! ICE credentials and candidates of a full SDP (what an ICE restart over WHIP needs, since the
//! server never sends a new full answer), and resolving the session `Location` header.
//!
//! These work on the SDP text on purpose: they must keep everything they do not touch byte for
//! byte, and they are shared by the publisher and by test servers.

use std::fmt::Write as _;

/// ICE credentials of one side of an ICE session.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IceCredentials {
    /// `a=ice-ufrag`
    pub ufrag: String,
    /// `a=ice-pwd`
    pub pwd: String,
}

/// The parts of a trickle-ice-sdpfrag (or of a full SDP) that matter to ICE.
///
/// Building one with [`SdpFrag::to_sdpfrag`] gives the RFC 8840 layout WHIP clients send:
///
/// ```text
/// a=ice-options:trickle
/// a=group:BUNDLE 0 1
/// m=audio 9 UDP/TLS/RTP/SAVPF 111
/// a=mid:0
/// a=ice-ufrag:...
/// a=ice-pwd:...
/// a=candidate:...
/// a=end-of-candidates
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SdpFrag {
    /// `a=ice-options:trickle` at session level.
    pub ice_options_trickle: bool,
    /// The value of `a=group:` (e.g. `BUNDLE 0 1`), if any.
    pub group: Option<String>,
    /// The first media section's `m=` line value (e.g. `audio 9 UDP/TLS/RTP/SAVPF 111`).
    pub m_line: Option<String>,
    /// The first media section's `a=mid`.
    pub mid: Option<String>,
    /// ICE credentials (media level wins over session level when parsing).
    pub credentials: Option<IceCredentials>,
    /// Candidate attribute values, each starting with `candidate:`.
    pub candidates: Vec<String>,
    /// `a=end-of-candidates`.
    pub end_of_candidates: bool,
}

impl SdpFrag {
    /// Serialises the fragment with CRLF line endings.
    pub fn to_sdpfrag(&self) -> String {
        let mut out = String::new();
        if self.ice_options_trickle {
            out.push_str("a=ice-options:trickle\r\n");
        }
        if let Some(group) = &self.group {
            let _ = write!(out, "a=group:{group}\r\n");
        }
        if let Some(m) = &self.m_line {
            let _ = write!(out, "m={m}\r\n");
        }
        if let Some(mid) = &self.mid {
            let _ = write!(out, "a=mid:{mid}\r\n");
        }
        if let Some(c) = &self.credentials {
            let _ = write!(out, "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\n", c.ufrag, c.pwd);
        }
        for cand in &self.candidates {
            let _ = write!(out, "a={}\r\n", candidate_attr(cand));
        }
        if self.end_of_candidates {
            out.push_str("a=end-of-candidates\r\n");
        }
        out
    }

    /// Parses an sdpfrag or a full SDP, keeping only the first media section's mid and m-line,
    /// the credentials (media level overriding session level), the candidates of every section
    /// (up to `a=end-of-candidates`) and the end-of-candidates flag. Unknown lines are ignored.
    pub fn parse(text: &str) -> SdpFrag {
        let mut frag = SdpFrag::default();
        let mut session_ufrag = None;
        let mut session_pwd = None;
        let mut media_ufrag = None;
        let mut media_pwd = None;
        let mut sections = 0usize;
        for line in text.lines() {
            let line = line.trim_end_matches('\r').trim();
            if let Some(m) = line.strip_prefix("m=") {
                sections += 1;
                if sections == 1 {
                    frag.m_line = Some(m.to_owned());
                }
                continue;
            }
            let Some(attr) = line.strip_prefix("a=") else {
                continue;
            };
            let (key, value) = match attr.split_once(':') {
                Some((k, v)) => (k, Some(v)),
                None => (attr, None),
            };
            match (key, value) {
                ("ice-options", Some(v)) if v.split_ascii_whitespace().any(|o| o == "trickle") => {
                    frag.ice_options_trickle = true;
                }
                ("group", Some(v)) if frag.group.is_none() => frag.group = Some(v.to_owned()),
                ("mid", Some(v)) if sections == 1 => frag.mid = Some(v.to_owned()),
                ("ice-ufrag", Some(v)) => {
                    let slot = if sections == 0 {
                        &mut session_ufrag
                    } else {
                        &mut media_ufrag
                    };
                    slot.get_or_insert_with(|| v.to_owned());
                }
                ("ice-pwd", Some(v)) => {
                    let slot = if sections == 0 {
                        &mut session_pwd
                    } else {
                        &mut media_pwd
                    };
                    slot.get_or_insert_with(|| v.to_owned());
                }
                ("candidate", Some(v)) if !frag.end_of_candidates => {
                    let cand = format!("candidate:{v}");
                    if !frag.candidates.contains(&cand) {
                        frag.candidates.push(cand);
                    }
                }
                ("end-of-candidates", None) => frag.end_of_candidates = true,
                _ => {}
            }
        }
        let ufrag = media_ufrag.or(session_ufrag);
        let pwd = media_pwd.or(session_pwd);
        if let (Some(ufrag), Some(pwd)) = (ufrag, pwd) {
            frag.credentials = Some(IceCredentials { ufrag, pwd });
        }
        frag
    }
}

/// `candidate:...` for a value given with or without the `candidate:` / `a=` prefixes.
fn candidate_attr(value: &str) -> String {
    let v = value.strip_prefix("a=").unwrap_or(value);
    if v.starts_with("candidate:") {
        v.to_owned()
    } else {
        format!("candidate:{v}")
    }
}

/// Rewrites the ICE parts of a full SDP: every `a=ice-ufrag` / `a=ice-pwd` gets the new
/// credentials, every `a=candidate` and `a=end-of-candidates` is removed, and `candidates`
/// (followed by `a=end-of-candidates` when `end_of_candidates`) are put at the end of the first
/// media section (the BUNDLE tag's). The `o=` session version is incremented; everything else is
/// kept as it was. Output lines end in CRLF.
///
/// An ICE restart over WHIP exchanges only sdpfrags, so the client applies the server's new
/// credentials by rewriting the answer it already has, and a server by rewriting the offer.
pub fn rewrite_ice(
    sdp: &str,
    creds: &IceCredentials,
    candidates: &[String],
    end_of_candidates: bool,
) -> String {
    let mut out = String::with_capacity(sdp.len() + 256);
    let mut sections = 0usize;
    let mut inserted = false;
    let insert = |out: &mut String| {
        for c in candidates {
            let _ = write!(out, "a={}\r\n", candidate_attr(c));
        }
        if end_of_candidates {
            out.push_str("a=end-of-candidates\r\n");
        }
    };
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        if line.starts_with("m=") {
            if sections == 1 && !inserted {
                insert(&mut out);
                inserted = true;
            }
            sections += 1;
        }
        if line.starts_with("a=ice-ufrag:") {
            let _ = write!(out, "a=ice-ufrag:{}\r\n", creds.ufrag);
        } else if line.starts_with("a=ice-pwd:") {
            let _ = write!(out, "a=ice-pwd:{}\r\n", creds.pwd);
        } else if line.starts_with("a=candidate:") || line == "a=end-of-candidates" {
            // dropped: replaced below
        } else if let Some(origin) = line.strip_prefix("o=") {
            let _ = write!(out, "o={}\r\n", bump_origin_version(origin));
        } else {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    if sections >= 1 && !inserted {
        insert(&mut out);
    }
    out
}

/// `o=<user> <sess-id> <sess-version> ...` with the version incremented (kept as is when not a
/// number).
fn bump_origin_version(origin: &str) -> String {
    let mut fields: Vec<String> = origin.split(' ').map(str::to_owned).collect();
    if let Some(v) = fields.get_mut(2)
        && let Ok(n) = v.parse::<u64>()
    {
        *v = n.wrapping_add(1).to_string();
    }
    fields.join(" ")
}

/// The base URL of the node an absolute URL is on, which names a node of a cluster: what comes
/// before its `/whip/` (a node behind a proxy that gives every node one origin has a path of
/// its own, `https://whip.example/a`), else its origin (`scheme://host:port`).
pub fn node_base(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if scheme.is_empty() || authority == 0 {
        return None;
    }
    let path = &rest[authority..];
    let path = &path[..path.find(['?', '#']).unwrap_or(path.len())];
    let prefix = path.find("/whip/").unwrap_or(0);
    Some(&url[..scheme.len() + 3 + authority + prefix])
}

/// Resolves a `Location` header value against the URL of the request it answered
/// (RFC 9110 §10.2.2, reference resolution per RFC 3986 §5.2 for the forms servers use:
/// absolute URL, network-path `//host/...`, absolute path and relative path with dot segments).
pub fn resolve_location(base: &str, location: &str) -> Option<String> {
    let location = location.trim();
    if location.is_empty() {
        return None;
    }
    let (scheme, rest) = base.split_once("://")?;
    if location.contains("://") {
        return Some(location.to_owned());
    }
    if let Some(net) = location.strip_prefix("//") {
        return Some(format!("{scheme}://{net}"));
    }
    let (authority, base_path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    // Drop query and fragment of the base.
    let base_path = base_path
        .split(['?', '#'])
        .next()
        .filter(|p| !p.is_empty())
        .unwrap_or("/");
    let (loc_path, loc_tail) = match location.find(['?', '#']) {
        Some(i) => (&location[..i], &location[i..]),
        None => (location, ""),
    };
    let merged = if loc_path.starts_with('/') {
        loc_path.to_owned()
    } else if loc_path.is_empty() {
        base_path.to_owned()
    } else {
        let dir = match base_path.rfind('/') {
            Some(i) => &base_path[..=i],
            None => "/",
        };
        format!("{dir}{loc_path}")
    };
    Some(format!(
        "{scheme}://{authority}{}{loc_tail}",
        remove_dot_segments(&merged)
    ))
}

/// RFC 3986 §5.2.4 for an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => trailing_slash = i == last,
            ".." => {
                out.pop();
                trailing_slash = i == last;
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut s = String::from("/");
    s.push_str(&out.join("/"));
    if trailing_slash && !s.ends_with('/') {
        s.push('/');
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn node_bases_name_the_node() {
        let cases = [
            (
                "http://127.0.0.2:8080/whip/s/1",
                Some("http://127.0.0.2:8080"),
            ),
            (
                "https://whip.example/b/whip/s/1?x=/whip/",
                Some("https://whip.example/b"),
            ),
            (
                "https://node-a.example?x=/whip/y",
                Some("https://node-a.example"),
            ),
            ("http://h:9/live/s/whip", Some("http://h:9")),
            ("http://h", Some("http://h")),
            ("/whip/s", None),
            ("http:///x", None),
        ];
        for (url, want) in cases {
            assert_eq!(node_base(url), want, "{url}");
        }
    }

    use super::*;

    const ANSWER: &str = "v=0\r\n\
o=- 123 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0 1\r\n\
a=ice-lite\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
c=IN IP4 0.0.0.0\r\n\
a=mid:0\r\n\
a=ice-ufrag:oldU\r\n\
a=ice-pwd:oldPasswordOldPassword\r\n\
a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n\
a=end-of-candidates\r\n\
a=recvonly\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 102\r\n\
a=mid:1\r\n\
a=ice-ufrag:oldU\r\n\
a=ice-pwd:oldPasswordOldPassword\r\n\
a=recvonly\r\n";

    #[test]
    fn sdpfrag_layout() {
        let frag = SdpFrag {
            ice_options_trickle: true,
            group: Some("BUNDLE 0 1".into()),
            m_line: Some("audio 9 UDP/TLS/RTP/SAVPF 111".into()),
            mid: Some("0".into()),
            credentials: Some(IceCredentials {
                ufrag: "abcd".into(),
                pwd: "p".repeat(24),
            }),
            candidates: vec!["candidate:1 1 udp 2130706431 127.0.0.1 4000 typ host".into()],
            end_of_candidates: true,
        };
        let text = frag.to_sdpfrag();
        assert_eq!(
            text,
            format!(
                "a=ice-options:trickle\r\na=group:BUNDLE 0 1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
                 a=mid:0\r\na=ice-ufrag:abcd\r\na=ice-pwd:{}\r\n\
                 a=candidate:1 1 udp 2130706431 127.0.0.1 4000 typ host\r\na=end-of-candidates\r\n",
                "p".repeat(24)
            )
        );
        assert_eq!(SdpFrag::parse(&text), frag);
    }

    #[test]
    fn candidate_prefixes_are_normalised() {
        let frag = SdpFrag {
            candidates: vec![
                "a=candidate:1 1 udp 1 10.0.0.1 1 typ host".into(),
                "2 1 udp 1 10.0.0.2 2 typ host".into(),
            ],
            ..Default::default()
        };
        assert_eq!(
            frag.to_sdpfrag(),
            "a=candidate:1 1 udp 1 10.0.0.1 1 typ host\r\na=candidate:2 1 udp 1 10.0.0.2 2 typ host\r\n"
        );
    }

    #[test]
    fn parse_session_level_credentials_and_media_override() {
        let f = SdpFrag::parse("a=ice-ufrag:s\na=ice-pwd:spwd\nm=audio 9 X 0\na=mid:0\n");
        assert_eq!(
            f.credentials,
            Some(IceCredentials {
                ufrag: "s".into(),
                pwd: "spwd".into()
            })
        );
        let f = SdpFrag::parse(
            "a=ice-ufrag:s\r\na=ice-pwd:spwd\r\nm=audio 9 X 0\r\na=ice-ufrag:m\r\na=ice-pwd:mpwd\r\n",
        );
        assert_eq!(f.credentials.map(|c| c.ufrag), Some("m".into()));
        // Half credentials are no credentials.
        assert_eq!(SdpFrag::parse("a=ice-ufrag:x\r\n").credentials, None);
    }

    #[test]
    fn parse_ignores_candidates_after_end() {
        let f = SdpFrag::parse(
            "a=candidate:1 1 udp 1 1.1.1.1 1 typ host\r\na=end-of-candidates\r\na=candidate:2 1 udp 1 2.2.2.2 2 typ host\r\n",
        );
        assert_eq!(f.candidates.len(), 1);
        assert!(f.end_of_candidates);
    }

    #[test]
    fn parse_full_answer() {
        let f = SdpFrag::parse(ANSWER);
        assert_eq!(f.group.as_deref(), Some("BUNDLE 0 1"));
        assert_eq!(f.mid.as_deref(), Some("0"));
        assert_eq!(f.m_line.as_deref(), Some("audio 9 UDP/TLS/RTP/SAVPF 111"));
        assert_eq!(f.credentials.map(|c| c.ufrag), Some("oldU".into()));
        assert_eq!(f.candidates.len(), 1);
    }

    #[test]
    fn rewrite_replaces_credentials_and_candidates() {
        let creds = IceCredentials {
            ufrag: "newU".into(),
            pwd: "newPasswordNewPassword".into(),
        };
        let cands = vec![
            "candidate:2 1 udp 2130706431 127.0.0.1 6000 typ host".to_owned(),
            "a=candidate:3 1 udp 2130706431 127.0.0.2 6001 typ host".to_owned(),
        ];
        let out = rewrite_ice(ANSWER, &creds, &cands, true);
        assert!(!out.contains("oldU"));
        assert!(!out.contains("oldPassword"));
        assert_eq!(out.matches("a=ice-ufrag:newU\r\n").count(), 2);
        assert_eq!(
            out.matches("a=ice-pwd:newPasswordNewPassword\r\n").count(),
            2
        );
        assert!(!out.contains("5000"));
        assert!(out.contains("o=- 123 3 IN IP4 127.0.0.1\r\n"));
        // Candidates end the first section, before the video m-line.
        let audio_end = out.find("m=video").unwrap_or(0);
        let c2 = out.find("a=candidate:2 ").unwrap_or(usize::MAX);
        let c3 = out.find("a=candidate:3 ").unwrap_or(usize::MAX);
        let eoc = out.find("a=end-of-candidates").unwrap_or(usize::MAX);
        assert!(c2 < c3 && c3 < eoc && eoc < audio_end);
        assert!(out.find("a=recvonly").unwrap_or(usize::MAX) < c2);
        // Everything else is untouched.
        for keep in [
            "a=ice-lite\r\n",
            "a=group:BUNDLE 0 1\r\n",
            "c=IN IP4 0.0.0.0\r\n",
        ] {
            assert!(out.contains(keep), "{keep}");
        }
        let parsed = SdpFrag::parse(&out);
        assert_eq!(parsed.credentials, Some(creds));
        assert_eq!(parsed.candidates.len(), 2);
    }

    #[test]
    fn rewrite_single_section_appends_at_end() {
        let sdp = "v=0\no=- 1 x IN IP4 0.0.0.0\nm=audio 9 X 0\na=ice-ufrag:a\na=ice-pwd:b\n";
        let out = rewrite_ice(
            sdp,
            &IceCredentials {
                ufrag: "c".into(),
                pwd: "d".into(),
            },
            &["candidate:1 1 udp 1 1.1.1.1 1 typ host".into()],
            false,
        );
        assert_eq!(
            out,
            "v=0\r\no=- 1 x IN IP4 0.0.0.0\r\nm=audio 9 X 0\r\na=ice-ufrag:c\r\na=ice-pwd:d\r\n\
             a=candidate:1 1 udp 1 1.1.1.1 1 typ host\r\n"
        );
    }

    #[test]
    fn location_resolution() {
        let base = "http://127.0.0.1:8080/whip/demo";
        let cases = [
            (
                "/whip/session/abc",
                "http://127.0.0.1:8080/whip/session/abc",
            ),
            ("session/abc", "http://127.0.0.1:8080/whip/session/abc"),
            ("./s/abc", "http://127.0.0.1:8080/whip/s/abc"),
            ("../resource/x", "http://127.0.0.1:8080/resource/x"),
            ("../../../x", "http://127.0.0.1:8080/x"),
            ("https://other:1/x?y=1", "https://other:1/x?y=1"),
            ("//other:2/z", "http://other:2/z"),
            ("abc?t=1", "http://127.0.0.1:8080/whip/abc?t=1"),
        ];
        for (loc, want) in cases {
            assert_eq!(resolve_location(base, loc).as_deref(), Some(want), "{loc}");
        }
        assert_eq!(
            resolve_location("http://h/whip/demo/", "x").as_deref(),
            Some("http://h/whip/demo/x")
        );
        assert_eq!(
            resolve_location("http://h", "x").as_deref(),
            Some("http://h/x")
        );
        assert_eq!(
            resolve_location("http://h/a?q=/b", "c").as_deref(),
            Some("http://h/c")
        );
        assert_eq!(resolve_location(base, "").as_deref(), None);
        assert_eq!(resolve_location("not a url", "x").as_deref(), None);
    }
}
