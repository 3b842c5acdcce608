//! Malformed HTTP/2 frames, written as raw bytes over real TLS, get the connection error code
//! RFC 9113 requires (the codes come from the `h2` crate as patched in `vendor/`). It proves
//! that:
//! - a SETTINGS ACK with a payload, a SETTINGS length not a multiple of 6, a PING not 8 bytes
//!   long and a WINDOW_UPDATE not 4 bytes long are FRAME_SIZE_ERROR (6.5, 6.7, 6.9);
//! - SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1 is FLOW_CONTROL_ERROR (6.5.2);
//! - a field block that cannot be decoded (index 0, an index past the table, a size update above
//!   the setting or after a field, Huffman padding that is not the EOS prefix) is
//!   COMPRESSION_ERROR (4.3);
//! - a well-formed request on the same harness is answered, and nothing reaches the upstream
//!   from a refused one.

mod support;

use std::time::Duration;

use support::{Setup, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_SIZE_ERROR: u32 = 0x6;
const FLOW_CONTROL_ERROR: u32 = 0x3;
const COMPRESSION_ERROR: u32 = 0x9;

const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const WINDOW_UPDATE: u8 = 0x8;
const HEADERS: u8 = 0x1;
const GOAWAY: u8 = 0x7;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut bytes = vec![len[1], len[2], len[3], kind, flags];
    bytes.extend_from_slice(&stream.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// A request's field block on stream 1 (END_STREAM | END_HEADERS).
fn headers(block: &[u8]) -> Vec<u8> {
    frame(HEADERS, 0x5, 1, block)
}

/// What the proxy answered to `bytes`, sent after the preface and an empty SETTINGS.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// GOAWAY with this error code.
    GoAway(u32),
    /// A HEADERS frame: a response.
    Response,
    /// The connection closed without either.
    Closed,
}

async fn answer(setup: &Setup, addr: std::net::SocketAddr, bytes: &[u8]) -> Answer {
    let mut tls = support::tls_connect(addr, "app.test", setup.pki.client(&[b"h2"]))
        .await
        .unwrap();
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out.extend_from_slice(bytes);
    tls.write_all(&out).await.unwrap();
    let read = async {
        // Bounded: the proxy's SETTINGS, its ACK, a WINDOW_UPDATE, then the answer.
        for _ in 0..16 {
            let mut head = [0u8; 9];
            if tls.read_exact(&mut head).await.is_err() {
                return Answer::Closed;
            }
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let mut payload = vec![0u8; len];
            if tls.read_exact(&mut payload).await.is_err() {
                return Answer::Closed;
            }
            match head[3] {
                GOAWAY => {
                    let code = u32::from_be_bytes(payload[4..8].try_into().unwrap());
                    return Answer::GoAway(code);
                }
                HEADERS => return Answer::Response,
                _ => {}
            }
        }
        Answer::Closed
    };
    tokio::time::timeout(WAIT, read)
        .await
        .unwrap_or(Answer::Closed)
}

#[tokio::test]
async fn malformed_frames_get_the_error_code_rfc_9113_requires() {
    let setup = Setup::new().await;
    let proxy = setup.start("").await;
    let good = {
        // :method GET, :scheme https, :path /, :authority app.test (literal, name indexed).
        let mut block = vec![0x82, 0x87, 0x84, 0x41, 0x08];
        block.extend_from_slice(b"app.test");
        block
    };
    assert_eq!(
        answer(&setup, proxy.https_addr, &headers(&good)).await,
        Answer::Response,
        "the harness's well-formed request"
    );
    let cases: [(&str, Vec<u8>, u32); 10] = [
        (
            "SETTINGS ACK with a payload",
            frame(SETTINGS, 0x1, 0, &[0, 3, 0, 0, 0, 100]),
            FRAME_SIZE_ERROR,
        ),
        (
            "SETTINGS of 5 bytes",
            frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0]),
            FRAME_SIZE_ERROR,
        ),
        (
            "PING of 7 bytes",
            frame(PING, 0, 0, &[0; 7]),
            FRAME_SIZE_ERROR,
        ),
        (
            "WINDOW_UPDATE of 3 bytes",
            frame(WINDOW_UPDATE, 0, 0, &[0, 0, 1]),
            FRAME_SIZE_ERROR,
        ),
        (
            "SETTINGS_INITIAL_WINDOW_SIZE of 2^31",
            frame(SETTINGS, 0, 0, &[0, 4, 0x80, 0, 0, 0]),
            FLOW_CONTROL_ERROR,
        ),
        ("HPACK index 0", headers(&[0x80]), COMPRESSION_ERROR),
        (
            "HPACK index past the table",
            headers(&[0xbe]),
            COMPRESSION_ERROR,
        ),
        (
            "HPACK size update above the setting (4097)",
            headers(&[0x3f, 0xe2, 0x1f]),
            COMPRESSION_ERROR,
        ),
        (
            "HPACK size update after a field",
            headers(&[0x82, 0x20]),
            COMPRESSION_ERROR,
        ),
        (
            // A literal whose name is Huffman '0' (00000) padded with 000 instead of 111.
            "HPACK Huffman padding of zeros",
            headers(&[0x00, 0x81, 0x00, 0x01, b'a']),
            COMPRESSION_ERROR,
        ),
    ];
    let mut wrong = Vec::new();
    for (what, bytes, code) in cases {
        let got = answer(&setup, proxy.https_addr, &bytes).await;
        if got != Answer::GoAway(code) {
            wrong.push(format!("{what}: {got:?}, not GOAWAY {code:#x}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        setup.app.hits(),
        1,
        "only the well-formed request was sent on"
    );
    assert!(proxy.shutdown().await);
}
