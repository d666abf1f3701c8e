use std::io::Write;

use super::*;

/// Collects what a reader produced, as text: `record/line: event-name` or `record/line: CODE`.
#[derive(Default)]
pub(crate) struct Collect {
    pub items: Vec<String>,
    pub stop_after: Option<usize>,
}

fn at(p: Position) -> String {
    let r = p.record.map_or("-".into(), |r| r.to_string());
    match p.line {
        Some(l) => format!("{r}@{l}"),
        None => r,
    }
}

impl RecordSink for Collect {
    fn record(&mut self, position: Position, raw: &RawEvent<'_>, source: Option<&str>) {
        let name = raw
            .conversion_type
            .or(raw.name)
            .and_then(|f| f.as_str().ok().map(|s| s.into_owned()))
            .unwrap_or_default();
        let source = source.map(|s| format!(" [{s}]")).unwrap_or_default();
        self.items.push(format!("{}: {name}{source}", at(position)));
    }
    fn invalid(&mut self, position: Position, rejection: Rejection) {
        self.items
            .push(format!("{}: {}", at(position), rejection.reason));
    }
    fn keep_going(&self) -> bool {
        self.stop_after.is_none_or(|n| self.items.len() < n)
    }
}

fn read(bytes: &[u8], key: &str) -> Vec<String> {
    let mut sink = Collect::default();
    let enc = Encoding::detect(key, None, None).expect("known format");
    read_object(
        bytes,
        enc,
        Limits {
            max_record_bytes: 200,
            max_object_bytes: 10_000,
        },
        &mut sink,
    )
    .expect("not interrupted");
    sink.items
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn detects_formats() {
    let d = |k, t, e| Encoding::detect(k, t, e);
    let enc = |format, gzip| Some(Encoding { format, gzip });
    assert_eq!(d("a/b.NDJSON", None, None), enc(Format::Ndjson, false));
    assert_eq!(d("a/b.jsonl.gz", None, None), enc(Format::Ndjson, true));
    assert_eq!(d("b.json", None, Some("gzip")), enc(Format::Json, true));
    assert_eq!(d("b.csv.gz", None, None), enc(Format::Csv, true));
    assert_eq!(
        d("b", Some("text/csv; charset=utf-8"), None),
        enc(Format::Csv, false)
    );
    assert_eq!(d("b.txt", None, None), None);
}

#[test]
fn ndjson_counts_records_and_lines() {
    let text = b"\xEF\xBB\xBF{\"name\":\"a\"}\r\n\n  \n{\"name\":\"b\"}\nnot json\n{\"nmae\":1}\n[1]\n{\"name\":\"c\"}";
    assert_eq!(
        read(text, "x.ndjson"),
        [
            "1@1: a",
            "2@4: b",
            "3@5: INVALID_JSON",
            "4@6: UNKNOWN_FIELD",
            "5@7: INVALID_JSON",
            "6@8: c"
        ]
    );
}

#[test]
fn ndjson_bounds_lines_and_checks_utf8() {
    let mut text = b"{\"name\":\"a\"}\n".to_vec();
    text.extend(std::iter::repeat_n(b'x', 1000));
    text.extend(b"\n\xff\xfe\n{\"name\":\"b\"}\n");
    assert_eq!(
        read(&text, "x.ndjson"),
        [
            "1@1: a",
            "2@2: RECORD_TOO_LARGE",
            "3@3: INVALID_ENCODING",
            "4@4: b"
        ]
    );
}

#[test]
fn gzip_is_undone_and_its_damage_rejected() {
    let text = b"{\"name\":\"a\"}\n{\"name\":\"b\"}\n".repeat(20);
    let gz = gzip(&text);
    assert_eq!(read(&gz, "x.ndjson.gz").len(), 40);
    let truncated = &gz[..gz.len() / 2];
    let items = read(truncated, "x.ndjson.gz");
    assert_eq!(
        items.last().unwrap().split(": ").nth(1),
        Some("CORRUPT_GZIP"),
        "{items:?}"
    );
    // A bomb: the decompressed size is bounded.
    let bomb = gzip(&vec![b' '; 100_000]);
    assert_eq!(read(&bomb, "x.ndjson.gz"), ["-: OBJECT_TOO_LARGE"]);
}

#[test]
fn json_request_object_array_and_single_event() {
    let request =
        br#"{"source":"AMAZON_AD_TAG","eventData":[{"name":"a"},{"name":"b"},{"bad":1}]}"#;
    assert_eq!(
        read(request, "x.json"),
        [
            "1: a [AMAZON_AD_TAG]",
            "2: b [AMAZON_AD_TAG]",
            "3: UNKNOWN_FIELD"
        ]
    );
    let late_source = br#"{"eventData":[{"name":"a"}],"source":"SERVER_TO_SERVER"}"#;
    assert_eq!(read(late_source, "x.json"), ["1: a [SERVER_TO_SERVER]"]);
    let array = br#" [ {"name":"a"}, 5, {"name":"b"} ] "#;
    assert_eq!(read(array, "x.json"), ["1: a", "2: INVALID_JSON", "3: b"]);
    let single = br#"{"name":"solo","source":"AMAZON_AD_TAG"}"#;
    assert_eq!(read(single, "x.json"), ["1: solo"]);
}

#[test]
fn broken_json_rejects_the_rest_and_keeps_what_came_before() {
    let broken = br#"[{"name":"a"},{"name":"b"},{"name":"#;
    assert_eq!(read(broken, "x.json"), ["1: a", "2: b", "3: INVALID_JSON"]);
    assert_eq!(read(b"42", "x.json"), ["1: INVALID_JSON"]);
    assert_eq!(
        read(br#"[{"name":"a"}] x"#, "x.json"),
        ["1: a", "2: INVALID_JSON"]
    );
}

#[test]
fn csv_maps_columns_in_any_order() {
    let text = b"userIdentifier,conversionType,clientDedupeId\r\nx@y.z,buy,\"a,b\"\r\n\n,\"multi\nline\",\nonly-one\n,last,";
    assert_eq!(
        read(text, "x.csv"),
        [
            "1@2: buy",
            "2@4: multi\nline",
            "3@6: INVALID_CSV",
            "4@7: last"
        ]
    );
}

#[test]
fn csv_with_an_unknown_column_is_rejected_whole() {
    assert_eq!(
        read(b"eventTime,email\n1,2\n", "x.csv"),
        ["-: UNKNOWN_FIELD"]
    );
    assert_eq!(read(b"name,name\n", "x.csv"), ["-: UNKNOWN_FIELD"]);
    assert!(read(b"", "x.csv").is_empty());
}

#[test]
fn source_errors_interrupt_instead_of_rejecting() {
    struct Failing;
    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset"))
        }
    }
    let mut sink = Collect::default();
    let enc = Encoding {
        format: Format::Ndjson,
        gzip: false,
    };
    let r = read_object(Failing, enc, Limits::default(), &mut sink);
    assert!(matches!(r, Err(Interrupted::Source(_))), "{r:?}");
    assert!(sink.items.is_empty());
}

#[test]
fn readers_stop_when_asked() {
    let text = b"{\"name\":\"a\"}\n".repeat(10);
    let mut sink = Collect {
        stop_after: Some(3),
        ..Default::default()
    };
    let enc = Encoding {
        format: Format::Ndjson,
        gzip: false,
    };
    let r = read_object(&text[..], enc, Limits::default(), &mut sink);
    assert!(matches!(r, Err(Interrupted::Stopped(_))));
    assert_eq!(sink.items.len(), 3);
}

#[test]
fn huge_json_elements_and_csv_rows_are_bounded() {
    // Limits in `read`: 200 bytes per record.
    let long = "x".repeat(500);
    let array = format!(r#"[{{"name":"a"}},{{"name":"{long}"}},{{"name":"b"}}]"#);
    assert_eq!(
        read(array.as_bytes(), "x.json"),
        ["1: a", "2: RECORD_TOO_LARGE"]
    );
    let mut sink = Collect::default();
    let enc = Encoding {
        format: Format::Csv,
        gzip: false,
    };
    let limits = Limits {
        max_record_bytes: 10,
        max_object_bytes: 1 << 30,
    };
    let csv = format!("name\na\n{}\nb\n", "y".repeat(300_000));
    read_object(csv.as_bytes(), enc, limits, &mut sink).unwrap();
    assert_eq!(
        sink.items.last().map(String::as_str),
        Some("2@3: RECORD_TOO_LARGE"),
        "{:?}",
        sink.items
    );
}

/// Reads `bytes` as `key` in pieces of at most `piece` records, each resumed where the last one
/// stopped (a ranged read of the bytes from the offset where one is given, else the whole input
/// again, skipping), and returns what all the pieces produced together.
fn read_in_pieces(bytes: &[u8], key: &str, piece: usize) -> (Vec<String>, usize) {
    let enc = Encoding::detect(key, None, None).expect("known format");
    let limits = Limits::default();
    let mut all = Vec::new();
    let mut start = Start::Beginning;
    let mut pieces = 0;
    loop {
        pieces += 1;
        let mut sink = Collect {
            stop_after: Some(piece),
            ..Default::default()
        };
        let source: &[u8] = match &start {
            Start::Ranged { resume, .. } => &bytes[resume.offset.unwrap() as usize..],
            _ => bytes,
        };
        let r = read_object_from(source, enc, limits, &start, &mut sink);
        all.extend(sink.items);
        match r {
            Ok(()) => return (all, pieces),
            Err(Interrupted::Stopped(resume)) => {
                assert!(pieces < 1000, "no progress");
                start = match resume.offset {
                    Some(_) if ranged(enc) => Start::Ranged {
                        resume,
                        csv_header: (enc.format == Format::Csv)
                            .then(|| csv_header(bytes, limits).unwrap()),
                    },
                    _ => Start::Skip {
                        record: resume.record,
                    },
                };
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn resumed_reading_gives_what_one_pass_gives() {
    let ndjson = "\u{feff}{\"name\":\"a\"}\n\n{\"name\":\"b\"}\r\nnot json\n{\"name\":\"c\"}\n\n\n{\"name\":\"d\"}\n{\"name\":\"e\"}";
    let csv = "\u{feff}conversionType,eventTime\r\np1,t\n\"p\n2\",t\n,\np3,t\nbad\np4,t\np5,t\n";
    let json = r#"{"source":"AMAZON_AD_TAG","eventData":[{"name":"a"},{"name":"b"},7,{"name":"c"},{"name":"d"}]}"#;
    let array = r#"[{"name":"a"},{"name":"b"},{"name":"c"},{"name":"d"}]"#;
    for (key, text) in [
        ("x.ndjson", ndjson),
        ("x.csv", csv),
        ("x.json", json),
        ("x.json", array),
    ] {
        let whole = read(text.as_bytes(), key);
        for piece in 1..=3 {
            let (pieces, n) = read_in_pieces(text.as_bytes(), key, piece);
            assert_eq!(pieces, whole, "{key} in pieces of {piece}");
            assert!(n > 1, "{key}: stopped at least once");
        }
        let gz = gzip(text.as_bytes());
        let gz_key = format!("{key}.gz");
        let (pieces, _) = read_in_pieces(&gz, &gz_key, 2);
        assert_eq!(pieces, whole, "{gz_key}");
    }
}

#[test]
fn offsets_are_kept_only_where_a_ranged_read_can_use_them() {
    let stop_at_first = |bytes: &[u8], key: &str| {
        let mut sink = Collect {
            stop_after: Some(1),
            ..Default::default()
        };
        let enc = Encoding::detect(key, None, None).unwrap();
        match read_object(bytes, enc, Limits::default(), &mut sink) {
            Err(Interrupted::Stopped(r)) => r,
            other => panic!("{other:?}"),
        }
    };
    let text = b"{\"name\":\"a\"}\n{\"name\":\"b\"}\n";
    assert_eq!(
        stop_at_first(text, "x.ndjson"),
        Resume {
            record: 2,
            line: Some(2),
            offset: Some(13)
        }
    );
    assert_eq!(stop_at_first(&gzip(text), "x.ndjson.gz").offset, None);
    let csv = b"eventTime\na\nb\n";
    assert_eq!(
        stop_at_first(csv, "x.csv"),
        Resume {
            record: 2,
            line: Some(3),
            offset: Some(12)
        }
    );
}

#[test]
fn events_before_their_source_wait_on_disk_not_in_memory() {
    // Sorted keys put `eventData` before `source`; 4 MB of events is over the 1 MiB record limit.
    let events: Vec<String> = (0..20_000)
        .map(|i| format!(r#"{{"name":"e{i}","timestamp":"{}"}}"#, "x".repeat(150)))
        .collect();
    let text = format!(
        r#"{{"eventData":[{}],"source":"AMAZON_AD_TAG"}}"#,
        events.join(",\n")
    );
    let mut sink = Collect::default();
    let enc = Encoding::detect("x.json", None, None).unwrap();
    read_object(text.as_bytes(), enc, Limits::default(), &mut sink).unwrap();
    assert_eq!(sink.items.len(), 20_000);
    assert_eq!(sink.items[0], "1: e0 [AMAZON_AD_TAG]");
    assert_eq!(sink.items[19_999], "20000: e19999 [AMAZON_AD_TAG]");
    // The same in a message body, and the spill file is gone afterwards.
    let mut sink = Collect::default();
    read_json_slice(
        br#"{"eventData":[{"name":"a"},{"name":"b"}],"source":"SERVER_TO_SERVER"}"#,
        &mut sink,
    )
    .unwrap();
    assert_eq!(
        sink.items,
        ["1: a [SERVER_TO_SERVER]", "2: b [SERVER_TO_SERVER]"]
    );
    let leftovers = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("dsp-events-{}-", std::process::id()))
        })
        .count();
    assert_eq!(leftovers, 0);
}

#[test]
fn positions_inside_a_record_are_not_taken_for_lines_of_the_file() {
    let e = serde_json::from_str::<serde_json::Value>(r#"{"a": 1,, "b": 2}"#).unwrap_err();
    let r = json_rejection(&e);
    assert!(
        r.message.ends_with("(character 9 of the record)"),
        "{}",
        r.message
    );
    assert!(!r.message.contains("at line"), "{}", r.message);
}
