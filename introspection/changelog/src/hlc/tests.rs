//! The clock's rules: monotonic whatever the physical clock does, logical
//! counting, the order and its node tie-break, text and JSON forms.
use super::*;

const A: NodeId = NodeId(0xa);
const B: NodeId = NodeId(0xb);

fn parts(h: Hlc) -> (u64, u32) {
    (h.physical_ns, h.logical)
}

#[test]
fn stamps_increase_while_the_clock_goes_backwards() {
    let mut clock = HlcClock::new(A);
    let readings = [100, 200, 150, 150, 90, 200, 201, 5];
    let stamps: Vec<Hlc> = readings.iter().map(|&t| clock.tick(t)).collect();
    assert_eq!(
        stamps.iter().map(|&h| parts(h)).collect::<Vec<_>>(),
        [
            (100, 0),
            (200, 0),
            (200, 1),
            (200, 2),
            (200, 3),
            (200, 4),
            (201, 0),
            (201, 1)
        ]
    );
    assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{stamps:?}");
    assert!(stamps.iter().all(|h| h.node == A));
}

#[test]
fn logical_counts_within_one_ns_and_resets_when_time_moves() {
    let mut clock = HlcClock::new(A);
    assert_eq!(parts(clock.tick(7)), (7, 0));
    assert_eq!(parts(clock.tick(7)), (7, 1));
    assert_eq!(parts(clock.tick(7)), (7, 2));
    assert_eq!(parts(clock.tick(8)), (8, 0));
    assert_eq!(clock.last_physical(), 8);
}

#[test]
fn a_full_counter_moves_time_on_instead_of_wrapping() {
    let mut clock = HlcClock::new(A);
    clock.observe(Hlc::new(50, u32::MAX, B));
    let next = clock.tick(10);
    assert_eq!(parts(next), (51, 0));
    assert!(next > Hlc::new(50, u32::MAX, B));
}

#[test]
fn observed_stamps_from_elsewhere_are_never_undercut() {
    // A log continued on a host whose clock is far behind the last record.
    let mut clock = HlcClock::new(A);
    clock.tick(5);
    clock.observe(Hlc::new(1_000, 7, B));
    assert_eq!(clock.last(), Some(Hlc::new(1_000, 7, B)));
    assert_eq!(clock.tick(10), Hlc::new(1_000, 8, A));
    // An older stamp changes nothing.
    clock.observe(Hlc::new(900, 99, B));
    assert_eq!(clock.tick(10), Hlc::new(1_000, 9, A));
    assert_eq!(clock.tick(2_000), Hlc::new(2_000, 0, A));
}

#[test]
fn copies_may_repeat_a_stamp_but_never_go_back() {
    let mut clock = HlcClock::new(A);
    let legacy = Hlc::legacy(40);
    assert!(clock.accepts(legacy));
    clock.observe(legacy);
    assert!(clock.accepts(legacy), "old logs can share a stamp");
    assert!(clock.accepts(Hlc::new(40, 0, B)));
    assert!(!clock.accepts(Hlc::legacy(39)));
    clock.observe(Hlc::new(40, 3, B));
    assert!(!clock.accepts(Hlc::new(40, 3, A)), "node breaks the tie");
    assert!(clock.accepts(Hlc::new(40, 4, A)));
}

#[test]
fn order_is_physical_then_logical_then_node() {
    let mut all = vec![
        Hlc::new(2, 0, A),
        Hlc::new(1, 5, B),
        Hlc::new(1, 5, A),
        Hlc::new(1, 6, NodeId::LEGACY),
        Hlc::legacy(1),
    ];
    all.sort();
    assert_eq!(
        all,
        [
            Hlc::legacy(1),
            Hlc::new(1, 5, A),
            Hlc::new(1, 5, B),
            Hlc::new(1, 6, NodeId::LEGACY),
            Hlc::new(2, 0, A),
        ]
    );
}

#[test]
fn text_and_json_forms_round_trip() {
    let h = Hlc::new(1_700_000_000_123_456_789, 3, NodeId(0x9f86_d081_884c_7d65));
    let text = h.to_string();
    assert_eq!(text, "1700000000123456789.3@9f86d081884c7d65");
    assert_eq!(text.parse::<Hlc>(), Ok(h));
    let json = serde_json::to_string(&h).unwrap();
    assert_eq!(json, format!("\"{text}\""));
    assert_eq!(serde_json::from_str::<Hlc>(&json).unwrap(), h);
    assert_eq!(Hlc::legacy(5).to_string(), "5.0@0000000000000000");
    for bad in ["", "5", "5.1", "5@0000000000000000", "x.1@0000000000000000"] {
        assert!(
            matches!(bad.parse::<Hlc>(), Err(HlcParseError::Shape(_))),
            "{bad}"
        );
    }
    assert!(matches!(
        "5.1@abc".parse::<Hlc>(),
        Err(HlcParseError::Node(_))
    ));
}

#[test]
fn node_ids_are_stable_hashes_and_never_legacy() {
    assert_eq!(NodeId::from_name("host-a"), NodeId::from_name("host-a"));
    assert_ne!(NodeId::from_name("host-a"), NodeId::from_name("host-b"));
    assert!(!NodeId::from_name("").is_legacy());
    assert!(!NodeId::local().is_legacy());
    assert_eq!(NodeId::local(), NodeId::local());
}
