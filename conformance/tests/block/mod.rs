//! BLOCK_01–06: block-wise transfers (RFC 7959), both directions, on `/example_data` (both
//! servers start it with the same generated 1500 bytes, `a123456789b123456789...`) and on
//! resources made by PUT and POST (`-d`, and `-e` for the echoed POST of BLOCK_05).
//!
//! Each client runs once per step with `-o file`, so its output is compared byte for byte;
//! every request/response pair of the transfer is checked on the wire: Block1/Block2 NUM, M
//! and SZX in sequence, 2.31 Continue for each non-final Block1 block, Size1/Size2, ETag the
//! same on every block of one representation, each payload exactly its block of the body.
//! What the RFC leaves open (tokens, Size1/Size2 on which blocks, Block1 in the final
//! response) is written into the row's note.

use coap_engine::coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use coap_engine_conformance::{Relay, Run, Scratch, Server};

use crate::{code, ctx, example_data, libcoap_client, our_client, Case, Dir};

/// Bytes of every value (not text: a body is never re-encoded on the way).
fn binary(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| ((i ^ seed).wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect()
}

/// One request and the response that answered it (piggybacked: the ACK with its MID).
struct Step {
    req: Packet,
    resp: Packet,
}

/// A Block1/Block2 option: (NUM, M, block size in bytes).
type Block = (u32, bool, usize);

fn uint(v: &[u8]) -> u32 {
    v.iter().fold(0, |acc, &b| (acc << 8) | u32::from(b))
}

fn block(p: &Packet, o: CoapOption) -> Option<Block> {
    p.get_first_option(o).map(|v| {
        let v = uint(v);
        (v >> 4, v & 8 != 0, 16 << (v & 7))
    })
}

fn number(p: &Packet, o: CoapOption) -> Option<u32> {
    p.get_first_option(o).map(|v| uint(v))
}

fn etag(p: &Packet) -> Option<Vec<u8>> {
    p.get_first_option(CoapOption::ETag).cloned()
}

fn hex(b: &[u8]) -> String {
    let digits: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("0x{digits}")
}

fn show(b: Option<Block>) -> String {
    match b {
        Some((num, more, size)) => format!("{num}/{}/{size}", if more { "M" } else { "_" }),
        None => "none".into(),
    }
}

/// The client, a relay and a server of one direction, and a scratch directory.
struct Pair {
    ours_client: bool,
    relay: Relay,
    _server: Server,
    scratch: Scratch,
}

impl Pair {
    fn new(dir: Dir, server_args: &[&str]) -> Pair {
        let ours_client = crate::ours_client(dir);
        let server = crate::server_for(ours_client, server_args);
        let relay = Relay::new(server.addr());
        Pair {
            ours_client,
            relay,
            _server: server,
            scratch: Scratch::new("block"),
        }
    }

    /// Runs the client with `args`, `-o` a fresh file and the URI of `path`; it must exit 0.
    /// Returns the run, the bytes it wrote (libcoap's client writes no file for an empty
    /// payload: none), the request/response pairs on the wire and the context for failure
    /// messages.
    #[track_caller]
    fn run(&self, args: &[&str], path: &str) -> (Run, Vec<u8>, Vec<Step>, String) {
        self.relay.clear();
        let out = self.scratch.file("out");
        let _ = std::fs::remove_file(&out);
        let uri = self.relay.uri(path);
        let mut a = args.to_vec();
        a.extend(["-o", &out, &uri]);
        let run = if self.ours_client {
            our_client(&a)
        } else {
            libcoap_client(&a)
        };
        let c = ctx(&self.relay, &run);
        run.expect_code(0);
        let written = std::fs::read(&out).unwrap_or_default();
        let steps = steps(&self.relay, &c);
        (run, written, steps, c)
    }

    /// Writes `data` to a scratch file for `-f`.
    fn input(&self, data: &[u8]) -> String {
        let path = self.scratch.file("in");
        std::fs::write(&path, data).expect("write the -f file");
        path
    }

    /// GET `path` back (late negotiation) and compare it with `want`, byte for byte.
    #[track_caller]
    fn read_back(&self, path: &str, want: &[u8]) -> String {
        let (_, got, steps, c) = self.run(&[], path);
        assert!(
            got == want,
            "GET {path} returned {} other bytes\n{c}",
            got.len()
        );
        let n = check_blocks(&steps, &steps, "2.05", None, want, &c).blocks;
        format!(
            "GET back: {} bytes byte-exact in {n} Block2 blocks",
            want.len()
        )
    }
}

/// The exchanges on the wire, in order: each CON request (a retransmission counted once)
/// with the ACK that answered it.
#[track_caller]
fn steps(relay: &Relay, c: &str) -> Vec<Step> {
    let dgs = relay.datagrams();
    let mut out: Vec<Step> = Vec::new();
    let mut seen = Vec::new();
    for d in dgs.iter().filter(|d| d.to_server && !d.is_empty_message()) {
        let req = d.packet();
        if !matches!(req.header.code, MessageClass::Request(_)) {
            continue;
        }
        let mid = req.header.message_id;
        if seen.contains(&mid) {
            continue;
        }
        seen.push(mid);
        assert_eq!(
            req.header.get_type(),
            MessageType::Confirmable,
            "CON requests\n{c}"
        );
        let resp = dgs
            .iter()
            .filter(|d| !d.to_server && !d.is_empty_message())
            .map(|d| d.packet())
            .find(|p| {
                p.header.get_type() == MessageType::Acknowledgement
                    && p.header.message_id == mid
                    && matches!(p.header.code, MessageClass::Response(_))
            })
            .unwrap_or_else(|| panic!("request {mid:#06x} not answered in an ACK\n{c}"));
        assert_eq!(resp.get_token(), req.get_token(), "token echoed\n{c}");
        out.push(Step { req, resp });
    }
    assert!(!out.is_empty(), "nothing on the wire\n{c}");
    out
}

/// What a Block2 transfer looked like.
struct Blocks {
    blocks: usize,
    note: String,
}

/// Checks a Block2 transfer whose responses are `answers[i].resp` (block i) and whose
/// requests for block 1 on are `asked[i].req` (`asked` and `answers` are the same steps but
/// for BLOCK_05, where block 0 answers the last Block1 block). `early`: the size block 0
/// was asked for. Returns the block count and size and a note on ETag, Size2, tokens.
#[track_caller]
fn check_blocks(
    answers: &[Step],
    asked: &[Step],
    want_code: &str,
    early: Option<usize>,
    body: &[u8],
    c: &str,
) -> Blocks {
    let first = &answers[0].resp;
    let (num, more, size) = block(first, CoapOption::Block2)
        .unwrap_or_else(|| panic!("the first response carries no Block2\n{c}"));
    assert!((num, more) == (0, true), "block 0 with M set first\n{c}");
    if let Some(asked_size) = early {
        // §2.4: the server MUST use the block size indicated or a smaller one.
        assert!(
            size <= asked_size,
            "server block size {size} > {asked_size}\n{c}"
        );
    }
    let blocks = body.len().div_ceil(size);
    assert_eq!(answers.len(), blocks, "one exchange per block\n{c}");
    let mut whole = Vec::new();
    for (i, step) in answers.iter().enumerate() {
        let r = &step.resp;
        assert_eq!(code(r), want_code, "block {i}: response code\n{c}");
        let last = i + 1 == blocks;
        assert_eq!(
            block(r, CoapOption::Block2),
            Some((i as u32, !last, size)),
            "block {i}: Block2 of the response\n{c}"
        );
        let end = ((i + 1) * size).min(body.len());
        assert!(
            r.payload == body[i * size..end],
            "block {i}: payload is not bytes {}..{end} of the body\n{c}",
            i * size
        );
        whole.extend_from_slice(&r.payload);
        if i > 0 {
            // §2.4: M is 0 in a request; later requests use the size the server chose.
            assert_eq!(
                block(&asked[i].req, CoapOption::Block2),
                Some((i as u32, false, size)),
                "request {i}: Block2\n{c}"
            );
        }
    }
    assert!(whole == body, "the blocks do not make up the body\n{c}");
    // §2.4: one ETag for all blocks of one representation.
    let tags: Vec<Option<Vec<u8>>> = answers.iter().map(|s| etag(&s.resp)).collect();
    let tag = tags[0]
        .clone()
        .unwrap_or_else(|| panic!("block 0 carries no ETag\n{c}"));
    assert!(
        tags.iter().all(|t| t.as_deref() == Some(&tag[..])),
        "the ETag differs between blocks: {tags:02x?}\n{c}"
    );
    // §4: Size2 in block 0 gives the size of the whole body.
    assert_eq!(
        number(first, CoapOption::Size2),
        Some(body.len() as u32),
        "Size2 in block 0\n{c}"
    );
    let size2 = answers
        .iter()
        .filter(|s| number(&s.resp, CoapOption::Size2).is_some())
        .count();
    let tokens = asked.iter().map(|s| s.req.get_token().to_vec());
    let mut distinct: Vec<Vec<u8>> = tokens.collect();
    distinct.dedup();
    let last = body.len() - (blocks - 1) * size;
    let note = format!(
        "{blocks} blocks of {size} (NUM 0–{}, M set but on the last, {last} bytes), ETag {} on \
         all, Size2 {} on {}, {}",
        blocks - 1,
        hex(&tag),
        body.len(),
        if size2 == 1 {
            "block 0 only".to_string()
        } else {
            format!("{size2} of {blocks} blocks")
        },
        if distinct.len() == 1 {
            "one token for all requests".to_string()
        } else {
            format!("{} tokens", distinct.len())
        }
    );
    Blocks { blocks, note }
}

/// Checks the Block1 part of an upload of `data`: the first steps carry Block1 blocks of
/// `size` in sequence, each non-final one answered 2.31 Continue with its Block1 (§2.3,
/// §2.5), Size1 with the body's size on the first (§4). Returns how many steps it took and
/// a note.
#[track_caller]
fn check_upload(
    steps: &[Step],
    method: RequestType,
    data: &[u8],
    size: usize,
    c: &str,
) -> (usize, String) {
    let blocks = data.len().div_ceil(size);
    assert!(
        steps.len() >= blocks,
        "{blocks} Block1 requests expected\n{c}"
    );
    let mut size1 = 0;
    for (i, step) in steps[..blocks].iter().enumerate() {
        let q = &step.req;
        let last = i + 1 == blocks;
        assert_eq!(
            q.header.code,
            MessageClass::Request(method),
            "request {i}: method\n{c}"
        );
        assert_eq!(
            block(q, CoapOption::Block1),
            Some((i as u32, !last, size)),
            "request {i}: Block1\n{c}"
        );
        let end = ((i + 1) * size).min(data.len());
        assert!(
            q.payload == data[i * size..end],
            "request {i}: payload is not bytes {}..{end} of the file\n{c}",
            i * size
        );
        if let Some(s) = number(q, CoapOption::Size1) {
            assert_eq!(s as usize, data.len(), "request {i}: Size1\n{c}");
            size1 += 1;
        }
        if i == 0 {
            assert!(size1 == 1, "Size1 in the first Block1 request\n{c}");
        }
        if !last {
            assert_eq!(code(&step.resp), "2.31", "block {i}: 2.31 Continue\n{c}");
            assert_eq!(
                block(&step.resp, CoapOption::Block1),
                Some((i as u32, true, size)),
                "block {i}: Block1 in the 2.31\n{c}"
            );
        }
    }
    let last = &steps[blocks - 1].resp;
    assert!(code(last).starts_with("2."), "final response\n{c}");
    let echo = block(last, CoapOption::Block1);
    if let Some(b) = echo {
        assert_eq!(b, ((blocks - 1) as u32, false, size), "final Block1\n{c}");
    }
    let tag = steps[0]
        .req
        .get_first_option(CoapOption::from(292u16))
        .is_some();
    let note = format!(
        "{} in {blocks} Block1 blocks of {size} (NUM 0–{}, M set but on the last), \
         {} 2.31 Continue with Block1, Size1 {} on {}{}; final {} with Block1 {}",
        format!("{method:?}").to_uppercase(),
        blocks - 1,
        blocks - 1,
        data.len(),
        if size1 == 1 {
            "the first block only".to_string()
        } else {
            format!("{size1} of {blocks} blocks")
        },
        if tag { ", Request-Tag (RFC 9175)" } else { "" },
        code(last),
        show(echo)
    );
    (blocks, note)
}

// ---------------------------------------------------------------------------------------------
// BLOCK_01, BLOCK_02, BLOCK_06: GET /example_data in Block2 blocks

/// GET /example_data with `-b size` (early negotiation, the size asked for in the first
/// request) or without (late: the server's size, 1024).
fn get_example_data(dir: Dir, size: Option<usize>) -> String {
    let p = Pair::new(dir, &[]);
    let want = example_data();
    let b = size.map(|s| s.to_string());
    let args: Vec<&str> = b.iter().flat_map(|b| ["-b", b.as_str()]).collect();
    let (_, got, steps, c) = p.run(&args, "example_data");
    assert!(
        got == want,
        "-o output is not the 1500 generated bytes\n{c}"
    );
    assert_eq!(
        block(&steps[0].req, CoapOption::Block2),
        size.map(|s| (0, false, s)),
        "Block2 of the first request\n{c}"
    );
    for s in &steps {
        assert_eq!(
            s.req.header.code,
            MessageClass::Request(RequestType::Get),
            "{c}"
        );
    }
    let t = check_blocks(&steps, &steps, "2.05", size, &want, &c);
    let first = match size {
        Some(s) => format!("first request Block2 0/_/{s}"),
        None => "first request without Block2".to_string(),
    };
    format!("{first}; {}; 1500 bytes byte-exact", t.note)
}

/// BLOCK_01 also asks for one block only: `-b 2,64` sends Block2 2/_/64 and prints block 2.
fn early(dir: Dir) -> String {
    let note = get_example_data(dir, Some(64));
    let p = Pair::new(dir, &[]);
    let want = example_data();
    let (_, got, steps, c) = p.run(&["-b", "2,64"], "example_data");
    assert_eq!(steps.len(), 1, "one request for one block\n{c}");
    let (q, r) = (&steps[0].req, &steps[0].resp);
    assert_eq!(block(q, CoapOption::Block2), Some((2, false, 64)), "{c}");
    assert_code_block(r, "2.05", Some((2, true, 64)), &c);
    assert!(
        r.payload == want[128..192],
        "block 2 is bytes 128..192\n{c}"
    );
    assert!(got == want[128..192], "-o output is block 2\n{c}");
    format!(
        "{note}. -b 2,64: one request Block2 2/_/64, answered 2/M/64 with bytes 128–191 \
         (ETag {}, Size2 {})",
        etag(r).map_or("none".into(), |t| hex(&t)),
        number(r, CoapOption::Size2).map_or("none".into(), |s| s.to_string())
    )
}

#[track_caller]
fn assert_code_block(r: &Packet, want: &str, b: Option<Block>, c: &str) {
    assert_eq!(code(r), want, "response code\n{c}");
    assert_eq!(block(r, CoapOption::Block2), b, "Block2\n{c}");
}

// ---------------------------------------------------------------------------------------------
// BLOCK_03, BLOCK_04: PUT and POST with Block1

/// PUT a 10,000-byte file to /example_data in Block1 blocks, then GET it back.
fn put(dir: Dir) -> String {
    let p = Pair::new(dir, &[]);
    let data = binary(10_000, 3);
    let file = p.input(&data);
    let (_, _, steps, c) = p.run(&["-m", "put", "-f", &file], "example_data");
    let (n, note) = check_upload(&steps, RequestType::Put, &data, 1024, &c);
    assert_eq!(steps.len(), n, "nothing after the last block\n{c}");
    let last = &steps[n - 1].resp;
    // RFC 7252 §5.8.3: 2.04 if it existed, 2.01 if the PUT created it; libcoap's
    // /example_data has nothing stored before the first PUT or GET.
    assert!(matches!(code(last).as_str(), "2.04" | "2.01"), "{c}");
    assert!(block(last, CoapOption::Block2).is_none(), "{c}");
    format!("{note}; {}", p.read_back("example_data", &data))
}

/// POST a 5,000-byte file to a new path (`-d`): 2.01 with Location-Path, then GET it back.
fn post_create(dir: Dir) -> String {
    let p = Pair::new(dir, &["-d", "10"]);
    let data = binary(5_000, 4);
    let file = p.input(&data);
    let (_, _, steps, c) = p.run(&["-m", "post", "-f", &file], "block-post");
    let (n, note) = check_upload(&steps, RequestType::Post, &data, 1024, &c);
    assert_eq!(steps.len(), n, "nothing after the last block\n{c}");
    let last = &steps[n - 1].resp;
    assert_eq!(code(last), "2.01", "created\n{c}");
    let location: Vec<Vec<u8>> = last
        .get_option(CoapOption::LocationPath)
        .map(|l| l.iter().cloned().collect())
        .unwrap_or_default();
    assert_eq!(location, [b"block-post".to_vec()], "Location-Path\n{c}");
    format!(
        "{note}, Location-Path \"block-post\"; {}",
        p.read_back("block-post", &data)
    )
}

// ---------------------------------------------------------------------------------------------
// BLOCK_05: POST with Block1 and a Block2 answer (§2.7)

/// POST a 2,500-byte file to a new path on a server started with `-e -d 10`: Block1 blocks,
/// then the answer (the stored body, echoed) in Block2 blocks, its first with the last
/// Block1 block's response, the rest asked for by POSTs with Block2 and neither Block1 nor
/// body (§2.7).
fn post_both_ways(dir: Dir) -> String {
    let p = Pair::new(dir, &["-e", "-d", "10"]);
    let data = binary(2_500, 5);
    let file = p.input(&data);
    let (_, got, steps, c) = p.run(&["-m", "post", "-f", &file], "block-echo");
    assert!(got == data, "the echoed body differs from the file\n{c}");
    let (n, up) = check_upload(&steps, RequestType::Post, &data, 1024, &c);
    let answers = &steps[n - 1..];
    for (i, s) in answers.iter().enumerate().skip(1) {
        let q = &s.req;
        assert_eq!(
            q.header.code,
            MessageClass::Request(RequestType::Post),
            "{c}"
        );
        assert!(
            block(q, CoapOption::Block1).is_none(),
            "request {i} for the answer: no Block1\n{c}"
        );
        assert!(
            q.payload.is_empty(),
            "request {i} for the answer: no body\n{c}"
        );
    }
    let t = check_blocks(answers, answers, "2.01", None, &data, &c);
    let more = &answers[1..];
    let repeated: Vec<String> = [
        (CoapOption::Size1, "Size1"),
        (CoapOption::from(292u16), "Request-Tag"),
    ]
    .iter()
    .filter(|(o, _)| more.iter().all(|s| s.req.get_first_option(*o).is_some()))
    .map(|(_, name)| name.to_string())
    .collect();
    format!(
        "{up}; answer: {} (first with the last Block1 block, then {} POSTs with Block2 and no \
         Block1, no body{}); echoed body byte-exact ({} bytes); {}",
        t.note,
        more.len(),
        if repeated.is_empty() {
            String::new()
        } else {
            format!(", repeating {}", repeated.join(" and "))
        },
        data.len(),
        p.read_back("block-echo", &data)
    )
}

pub fn cases() -> Vec<Case> {
    [
        both!(
            "BLOCK_01",
            "GET /example_data, Block2 early negotiation (-b 64); then -b 2,64 for one block",
            early
        ),
        both!(
            "BLOCK_02",
            "GET /example_data, Block2 late negotiation (no -b)",
            |d| get_example_data(d, None)
        ),
        both!(
            "BLOCK_03",
            "PUT of a 10,000-byte file (-f) in Block1 blocks, 2.31 Continue; GET back",
            put
        ),
        both!(
            "BLOCK_04",
            "POST of a 5,000-byte file in Block1 blocks creating a resource (-d); GET back",
            post_create
        ),
        both!(
            "BLOCK_05",
            "POST of 2,500 bytes in Block1 blocks, the echoed answer (-e) in Block2 blocks",
            post_both_ways
        ),
        both!(
            "BLOCK_06",
            "GET /example_data in 16-byte blocks (-b 16)",
            |d| get_example_data(d, Some(16))
        ),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// For the report's "Differences observed" section.
pub const OBSERVATIONS: &str = "\
- **Block-wise transfers (BLOCK_01–06)** work both ways with the same wire sequences: Block1 and
  Block2 NUM/M/SZX in order, 2.31 Continue with Block1 for every non-final Block1 block, Size1
  and Size2 giving the whole body's size, one ETag on every block of a representation, bodies
  byte-exact. Both servers start `/example_data` with the same generated 1500 bytes (libcoap
  leaves out Content-Format for its text/plain, ours sends Content-Format 0). The differences
  are choices RFC 7959 leaves open:
  - libcoap's client gives every block request a new token; ours keeps the request's token
    for the whole transfer. Blocks are tied together by the request's options (§2.4: further
    requests carry \"the same options as the initial request\"), not by the token.
  - libcoap's client sends Size1 on every Block1 block (and on the Block2 requests after a
    POST) and adds Request-Tag (RFC 9175); ours sends Size1 with block 0 only. §4 makes Size1
    a size indication a request carrying Block1 may give.
  - libcoap's server sends Size2 on every block; ours (the engine) on block 0, and on any
    block whose request carried Size2 (§4).
  - The final response to the last Block1 block: ours echoes its Block1 (NUM, M=0, SZX), as
    the examples of §3.2 show; libcoap's server sends no Block1 there. Both clients accept
    either.
  - One block only (`-b 2,64`, a Block2 request with NUM > 0 and no transfer before it):
    libcoap's server answers with neither ETag nor Size2; ours with the representation's
    ETag (the same as on a whole transfer).
  - After the last Block1 block of a POST whose answer is large (BLOCK_05, `-e`), both clients
    ask for the rest of the answer with POSTs carrying Block2 and neither Block1 nor body
    (§2.7). The engine serves them from the answer it keeps for EXCHANGE_LIFETIME, so the
    server application (our coap-server) sees the POST once and never runs an empty write;
    one whose answer is no longer kept gets 4.08 Request Entity Incomplete.
  - By hand, not a case: libcoap's `-b` takes any size and rounds it down to a power of two
    (`-b 48` asks for 32, `-b 2000` for 1024); our `-b` refuses anything but 16, 32, ..., 1024
    (the sizes of §2.2) with exit status 2.
- **ETag on a block-wise GET that carries an ETag (CORE_21)**: when the request has an ETag
  option, libcoap's server tags block 0 (with a new tag) and none of the later blocks. RFC 7959
  §2.4 says the server SHOULD include an ETag Option in each response; our client (the engine)
  takes the block without it for another representation, starts over from block 0 twice and
  then fails with \"the resource kept changing (ETag)\" (exit 3). libcoap's own client takes the
  blocks.
";
