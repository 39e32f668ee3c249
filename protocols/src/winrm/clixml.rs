//! PowerShell's CLIXML error stream, made readable.
//!
//! A non-interactive `powershell.exe` writes its error records to stderr as serialized objects:
//!
//! ```text
//! #< CLIXML
//! <Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04"><S S="Error">Get-Item : Cannot find path_x000D__x000A_</S>…</Objs>
//! ```
//!
//! [`decode_clixml`] turns that into the text PowerShell would have printed. It works on the
//! whole stream: WinRM may split it anywhere across Receive responses, so callers decode after
//! the command ended.

/// The header PowerShell writes before serialized stderr.
const HEADER: &str = "#< CLIXML";

/// Decodes PowerShell's CLIXML stderr into text: the `Error` strings (and `Warning` strings,
/// prefixed `WARNING: `), with `_xHHHH_` escapes and XML entities decoded; progress records and
/// other objects are dropped. Text that is not CLIXML is returned unchanged (lossy UTF-8), and so
/// is any text before the CLIXML part (some clients decode a first chunk themselves).
pub fn decode_clixml(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let Some(start) = clixml_start(&text) else {
        return text.into_owned();
    };
    let mut out = String::from(&text[..start]);
    let mut rest = &text[start..];
    while let Some(open) = rest.find("<S S=\"") {
        let after_open = &rest[open + "<S S=\"".len()..];
        let Some(quote) = after_open.find('"') else {
            break;
        };
        let kind = &after_open[..quote];
        let Some(body_start) = after_open[quote..].find('>').map(|i| quote + i + 1) else {
            break;
        };
        let body_and_rest = &after_open[body_start..];
        let self_closing = after_open[..body_start].ends_with("/>");
        let (body, next) = if self_closing {
            ("", body_and_rest)
        } else {
            match body_and_rest.find("</S>") {
                Some(end) => (&body_and_rest[..end], &body_and_rest[end + "</S>".len()..]),
                // A truncated stream: keep what arrived.
                None => (body_and_rest, ""),
            }
        };
        match kind {
            "Error" => out.push_str(&unescape(body)),
            "Warning" => {
                out.push_str("WARNING: ");
                out.push_str(&unescape(body));
            }
            _ => {}
        }
        rest = next;
    }
    out
}

/// Whether a stderr stream is (or contains) CLIXML.
pub fn is_clixml(stderr: &[u8]) -> bool {
    clixml_start(&String::from_utf8_lossy(stderr)).is_some()
}

/// Where the CLIXML part starts: the header, or (when the header was consumed elsewhere) the
/// `<Objs` element in PowerShell's namespace.
fn clixml_start(text: &str) -> Option<usize> {
    if let Some(at) = text.find(HEADER) {
        return Some(at);
    }
    let at = text.find("<Objs ")?;
    text[at..]
        .contains("schemas.microsoft.com/powershell/2004/04")
        .then_some(at)
}

/// Decodes `_xHHHH_` escapes (UTF-16 code units, surrogate pairs joined) and XML entities.
fn unescape(body: &str) -> String {
    let entities_decoded = decode_entities(body);
    let mut out = String::with_capacity(entities_decoded.len());
    let mut units: Vec<u16> = Vec::new();
    let mut rest = entities_decoded.as_str();
    loop {
        match parse_escape(rest) {
            Some((unit, len)) => {
                units.push(unit);
                rest = &rest[len..];
            }
            None => {
                if !units.is_empty() {
                    out.extend(
                        char::decode_utf16(units.drain(..)).map(|c| c.unwrap_or('\u{FFFD}')),
                    );
                }
                let mut chars = rest.chars();
                match chars.next() {
                    Some(c) => out.push(c),
                    None => break,
                }
                rest = chars.as_str();
            }
        }
    }
    out
}

/// `_xHHHH_` at the start of `s`: the code unit and the escape's length.
fn parse_escape(s: &str) -> Option<(u16, usize)> {
    let bytes = s.as_bytes();
    if bytes.len() < 7 || &bytes[..2] != b"_x" || bytes[6] != b'_' {
        return None;
    }
    let hex = s.get(2..6)?;
    let unit = u16::from_str_radix(hex, 16).ok()?;
    Some((unit, 7))
}

fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp..];
        let Some(semi) = tail.find(';').filter(|&i| i <= 10) else {
            out.push('&');
            rest = &tail[1..];
            continue;
        };
        let entity = &tail[1..semi];
        let decoded = match entity {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &tail[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What PowerShell 5.1 wrote for `Get-Item C:\missing` with stderr redirected.
    const GET_ITEM_ERROR: &str = concat!(
        "#< CLIXML\r\n",
        r#"<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">"#,
        r#"<Obj S="progress" RefId="0"><TN RefId="0"><T>System.Management.Automation.PSCustomObject</T><T>System.Object</T></TN><MS><I64 N="SourceId">1</I64><PR N="Record"><AV>Preparing modules for first use.</AV><AI>0</AI><Nil /><PI>-1</PI><PC>-1</PC><T>Completed</T><SR>-1</SR><SD> </SD></PR></MS></Obj>"#,
        r#"<S S="Error">Get-Item : Cannot find path 'C:\missing' because it does not exist._x000D__x000A_</S>"#,
        r#"<S S="Error">At line:1 char:1_x000D__x000A_</S>"#,
        r#"<S S="Error">+ Get-Item C:\missing_x000D__x000A_</S>"#,
        r#"<S S="Error">+     + CategoryInfo          : ObjectNotFound: (C:\missing:String) [Get-Item], ItemNotFoundException_x000D__x000A_</S>"#,
        r#"<S S="Warning">disk &lt;C:&gt; &amp; more is low_x000D__x000A_</S>"#,
        "</Objs>"
    );

    const EXPECTED: &str = "Get-Item : Cannot find path 'C:\\missing' because it does not exist.\r\n\
                            At line:1 char:1\r\n\
                            + Get-Item C:\\missing\r\n\
                            +     + CategoryInfo          : ObjectNotFound: (C:\\missing:String) [Get-Item], ItemNotFoundException\r\n\
                            WARNING: disk <C:> & more is low\r\n";

    fn check(input: &[u8], expected: &str) {
        assert_eq!(decode_clixml(input), expected, "input: {input:?}");
    }

    #[test]
    fn decodes_error_records_and_drops_progress() {
        check(GET_ITEM_ERROR.as_bytes(), EXPECTED);
        assert!(is_clixml(GET_ITEM_ERROR.as_bytes()));
    }

    #[test]
    fn plain_stderr_is_unchanged() {
        check(b"err \r\n", "err \r\n");
        check(b"", "");
        check(
            b"<Objs Version=\"1\">not powershell</Objs>",
            "<Objs Version=\"1\">not powershell</Objs>",
        );
        assert!(!is_clixml(b"err \r\n"));
    }

    #[test]
    fn split_anywhere_then_joined_decodes_the_same() {
        // Receive responses may cut the stream anywhere, even inside an escape; joining the
        // chunks before decoding gives the same text for every cut.
        let bytes = GET_ITEM_ERROR.as_bytes();
        for cut in 1..bytes.len() {
            let mut joined = bytes[..cut].to_vec();
            joined.extend_from_slice(&bytes[cut..]);
            assert_eq!(decode_clixml(&joined), EXPECTED, "cut at {cut}");
        }
    }

    #[test]
    fn header_consumed_by_the_client_still_decodes() {
        // winrm-rs 1.1.2 decodes a stderr chunk that starts with the header by itself: a chunk
        // holding only `#< CLIXML\r\n` becomes empty and the rest arrives raw.
        let without_header = GET_ITEM_ERROR
            .strip_prefix("#< CLIXML\r\n")
            .unwrap_or_default();
        check(without_header.as_bytes(), EXPECTED);
        // ... and a chunk with complete records arrives already decoded, before the raw rest.
        let mut mixed = b"first error\r\n".to_vec();
        mixed.extend_from_slice(without_header.as_bytes());
        check(&mixed, &format!("first error\r\n{EXPECTED}"));
    }

    #[test]
    fn escapes_cover_surrogates_entities_and_truncation() {
        check(
            "#< CLIXML\r\n<Objs xmlns=\"http://schemas.microsoft.com/powershell/2004/04\"><S S=\"Error\">caf_x00E9_ _xD83D__xDE00_ &#x41;&#66; _x000_ x_y_</S></Objs>".as_bytes(),
            "café 😀 AB _x000_ x_y_",
        );
        check(
            "#< CLIXML\r\n<Objs xmlns=\"http://schemas.microsoft.com/powershell/2004/04\"><S S=\"Error\">cut off he".as_bytes(),
            "cut off he",
        );
        check(
            "#< CLIXML\r\n<Objs xmlns=\"http://schemas.microsoft.com/powershell/2004/04\"><S S=\"Error\" /><S S=\"Error\">ok &bogus; &amp</S></Objs>".as_bytes(),
            "ok &bogus; &amp",
        );
    }
}
