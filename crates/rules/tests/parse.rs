//! The text form of rules: good rules parse to the expected trees, bad rules give the
//! right line, column and expectation, printing and parsing are inverse, and the parser
//! never panics.

use niyet_rules::ast::MAX_DUR_MS;
use niyet_rules::parse::{MAX_DEPTH, MAX_LEN};
use niyet_rules::{
    parse, Agg, Aggregate, Cmp, Dur, Events, Literal, Match, ParseError, PropTest, Rule, Seen,
    Sequence, Test, TimeTest, TraitTest,
};
use proptest::prelude::*;

const S: i64 = 1_000;
const M: i64 = 60 * S;
const H: i64 = 60 * M;
const D: i64 = 24 * H;

fn ev(name: &str) -> Match {
    Match {
        name: name.into(),
        filter: vec![],
    }
}

fn ev_where(name: &str, filter: Vec<PropTest>) -> Match {
    Match {
        name: name.into(),
        filter,
    }
}

fn pt(prop: &str, test: Test) -> PropTest {
    PropTest {
        prop: prop.into(),
        test,
    }
}

fn events(m: Match, window: Option<i64>) -> Events {
    Events {
        event: m,
        window: window.map(Dur),
    }
}

fn has(name: &str, window: Option<i64>) -> Rule {
    Rule::Has(events(ev(name), window))
}

fn agg(agg: Agg, name: &str, prop: Option<&str>, window: i64, cmp: Cmp, value: f64) -> Rule {
    Rule::Aggregate(Aggregate {
        agg,
        of: events(ev(name), Some(window)),
        prop: prop.map(str::to_string),
        cmp,
        value,
    })
}

fn tr(name: &str, test: Test) -> Rule {
    Rule::Trait(TraitTest {
        name: name.into(),
        test,
    })
}

fn s(v: &str) -> Literal {
    Literal::Str(v.into())
}

fn ok(text: &str) -> Rule {
    match parse(text) {
        Ok(r) => r,
        Err(e) => panic!("{text:?} did not parse: {e}"),
    }
}

fn check(text: &str, want: Rule) {
    let got = ok(text);
    assert_eq!(got, want, "{text:?}");
    // The canonical form of every good rule reads back as the same tree.
    let printed = got.to_string();
    assert_eq!(parse(&printed).as_ref(), Ok(&got), "printed as {printed:?}");
}

/// (line, column, expected, found) of the error `text` gives.
fn bad(text: &str) -> (usize, usize, String, String) {
    match parse(text) {
        Ok(r) => panic!("{text:?} parsed as {r:?}"),
        Err(ParseError {
            line,
            column,
            expected,
            found,
        }) => (line, column, expected, found),
    }
}

fn check_bad(text: &str, line: usize, column: usize, expected: &str, found: &str) {
    assert_eq!(
        bad(text),
        (line, column, expected.to_string(), found.to_string()),
        "{text:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Good rules

#[test]
fn aggregates_from_the_spec() {
    check(
        "count(Order Completed in 90d) >= 2",
        agg(Agg::Count, "Order Completed", None, 90 * D, Cmp::Ge, 2.0),
    );
    check(
        "sum(Order Completed.revenue in 365d) > 10000",
        agg(
            Agg::Sum,
            "Order Completed",
            Some("revenue"),
            365 * D,
            Cmp::Gt,
            10000.0,
        ),
    );
    check(
        "avg(Order Completed.revenue in 365d) > 500",
        agg(
            Agg::Avg,
            "Order Completed",
            Some("revenue"),
            365 * D,
            Cmp::Gt,
            500.0,
        ),
    );
    check(
        "distinct(Product Viewed.category in 30d) >= 3",
        agg(
            Agg::Distinct,
            "Product Viewed",
            Some("category"),
            30 * D,
            Cmp::Ge,
            3.0,
        ),
    );
    check(
        "min(Order Completed.revenue in 2w) <= 10_000.5",
        agg(
            Agg::Min,
            "Order Completed",
            Some("revenue"),
            14 * D,
            Cmp::Le,
            10_000.5,
        ),
    );
    check(
        "max(Order Completed.items.price in 12h) != -1.5e3",
        agg(
            Agg::Max,
            "Order Completed",
            Some("items.price"),
            12 * H,
            Cmp::Ne,
            -1500.0,
        ),
    );
}

#[test]
fn aggregate_with_filter_and_without_window() {
    check(
        r#"count(Order Completed where (currency = "TRY" and total > 100)) < 1e2"#,
        Rule::Aggregate(Aggregate {
            agg: Agg::Count,
            of: events(
                ev_where(
                    "Order Completed",
                    vec![
                        pt("currency", Test::Cmp(Cmp::Eq, s("TRY"))),
                        pt("total", Test::Cmp(Cmp::Gt, Literal::Num(100.0))),
                    ],
                ),
                None,
            ),
            prop: None,
            cmp: Cmp::Lt,
            value: 100.0,
        }),
    );
    check(
        r#"sum("Order Completed".revenue where currency = "TRY" in 500ms) = 0"#,
        Rule::Aggregate(Aggregate {
            agg: Agg::Sum,
            of: events(
                ev_where(
                    "Order Completed",
                    vec![pt("currency", Test::Cmp(Cmp::Eq, s("TRY")))],
                ),
                Some(500),
            ),
            prop: Some("revenue".into()),
            cmp: Cmp::Eq,
            value: 0.0,
        }),
    );
}

#[test]
fn events_no_and_sequence_from_the_spec() {
    check(
        r#"Page Viewed where path = "/pricing" in 7d"#,
        Rule::Has(events(
            ev_where(
                "Page Viewed",
                vec![pt("path", Test::Cmp(Cmp::Eq, s("/pricing")))],
            ),
            Some(7 * D),
        )),
    );
    check(
        "Product Added in 1h and no Order Completed in 1h",
        Rule::And(vec![
            has("Product Added", Some(H)),
            Rule::No(events(ev("Order Completed"), Some(H))),
        ]),
    );
    check(
        "Product Viewed then Product Added within 30m",
        Rule::Sequence(Sequence {
            first: ev("Product Viewed"),
            then: ev("Product Added"),
            within: Dur(30 * M),
            window: None,
        }),
    );
    check(
        r#"Product Viewed where category in ["shoes"] then Product Added within 45s in 7d"#,
        Rule::Sequence(Sequence {
            first: ev_where(
                "Product Viewed",
                vec![pt("category", Test::In(vec![s("shoes")]))],
            ),
            then: ev("Product Added"),
            within: Dur(45 * S),
            window: Some(Dur(7 * D)),
        }),
    );
}

#[test]
fn event_names_bare_quoted_and_any() {
    check("Signed Up", has("Signed Up", None));
    check("Signed    Up\n", has("Signed Up", None));
    check("Ürün Görüntülendi in 1d", has("Ürün Görüntülendi", Some(D)));
    check("Don't-Stop/Now_2 in 1d", has("Don't-Stop/Now_2", Some(D)));
    check(r#""No Show" in 30d"#, has("No Show", Some(30 * D)));
    check(r#""no show" in 30d"#, has("no show", Some(30 * D)));
    check(r#""a.b""#, has("a.b", None));
    check("* in 1h", has("*", Some(H)));
    check("no *", Rule::No(events(ev("*"), None)));
    // Keywords are lower case: `No` is an ordinary word.
    check("No Show", has("No Show", None));
}

#[test]
fn traits_and_age_from_the_spec() {
    check(
        r#"trait.city = "İzmir""#,
        tr("city", Test::Cmp(Cmp::Eq, s("İzmir"))),
    );
    check(
        "age between 25 and 34",
        Rule::Age(Test::Between(25.0, 34.0)),
    );
    check(
        r#"trait.gender in ["f","m"]"#,
        tr("gender", Test::In(vec![s("f"), s("m")])),
    );
    check(
        r#"trait.name contains "x""#,
        tr("name", Test::Contains("x".into())),
    );
    check(
        r#"trait.email starts_with "a""#,
        tr("email", Test::StartsWith("a".into())),
    );
    check("trait.phone is null", tr("phone", Test::IsNull));
    check("trait.phone is not null", tr("phone", Test::IsNotNull));
    check("trait.phone = null", tr("phone", Test::IsNull));
    check("trait.phone != null", tr("phone", Test::IsNotNull));
    check(
        "trait.tier not in [1, 2.5, -3, true]",
        tr(
            "tier",
            Test::NotIn(vec![
                Literal::Num(1.0),
                Literal::Num(2.5),
                Literal::Num(-3.0),
                Literal::Bool(true),
            ]),
        ),
    );
    check("trait.tags in []", tr("tags", Test::In(vec![])));
    check(
        "trait.vip = false",
        tr("vip", Test::Cmp(Cmp::Eq, Literal::Bool(false))),
    );
    check(
        r#"trait.address.city != "Bursa""#,
        tr("address.city", Test::Cmp(Cmp::Ne, s("Bursa"))),
    );
    check(
        r#"trait."first name".x = 1"#,
        tr("first name.x", Test::Cmp(Cmp::Eq, Literal::Num(1.0))),
    );
    check(
        "trait.age >= 18",
        tr("age", Test::Cmp(Cmp::Ge, Literal::Num(18.0))),
    );
    check(
        "age >= 18",
        Rule::Age(Test::Cmp(Cmp::Ge, Literal::Num(18.0))),
    );
}

#[test]
fn segment_and_boolean_structure() {
    check(
        r#"segment("VIP") and not (trait.city = "Ankara" or trait.city = "Bursa")"#,
        Rule::And(vec![
            Rule::Segment("VIP".into()),
            Rule::Not(Box::new(Rule::Or(vec![
                tr("city", Test::Cmp(Cmp::Eq, s("Ankara"))),
                tr("city", Test::Cmp(Cmp::Eq, s("Bursa"))),
            ]))),
        ]),
    );
    let (a, b, c) = (has("A", None), has("B", None), has("C", None));
    // `and` binds tighter than `or`; lists are flat; a group stays one child.
    check(
        "A or B and C",
        Rule::Or(vec![a.clone(), Rule::And(vec![b.clone(), c.clone()])]),
    );
    check(
        "A and B and C",
        Rule::And(vec![a.clone(), b.clone(), c.clone()]),
    );
    check(
        "(A and B) and C",
        Rule::And(vec![Rule::And(vec![a.clone(), b.clone()]), c.clone()]),
    );
    check("((A))", a.clone());
    check(
        "not not A",
        Rule::Not(Box::new(Rule::Not(Box::new(a.clone())))),
    );
    check(
        "not A and B",
        Rule::And(vec![Rule::Not(Box::new(a.clone())), b.clone()]),
    );
}

#[test]
fn seen_from_the_spec() {
    check(
        "last_seen(Order Completed) < 60d ago",
        Rule::Seen(Seen {
            last: true,
            event: Some(ev("Order Completed")),
            test: TimeTest::Ago(Cmp::Lt, Dur(60 * D)),
        }),
    );
    check(
        "first_seen > 30d ago",
        Rule::Seen(Seen {
            last: false,
            event: None,
            test: TimeTest::Ago(Cmp::Gt, Dur(30 * D)),
        }),
    );
    check(
        "first_seen(Page Viewed where path starts_with \"/blog\") is not null",
        Rule::Seen(Seen {
            last: false,
            event: Some(ev_where(
                "Page Viewed",
                vec![pt("path", Test::StartsWith("/blog".into()))],
            )),
            test: TimeTest::IsNotNull,
        }),
    );
    check(
        "last_seen is null",
        Rule::Seen(Seen {
            last: true,
            event: None,
            test: TimeTest::IsNull,
        }),
    );
}

#[test]
fn multi_line_rules_with_comments() {
    let text = r#"
# Big spenders who have gone quiet.
sum(Order Completed.revenue in 365d) > 10000   # a year of orders
  and last_seen(Order Completed) < 60d ago
  and not (
    trait.city = "Ankara"    # served by the store
    or trait.city = "Bursa"
  )
"#;
    check(
        text,
        Rule::And(vec![
            agg(
                Agg::Sum,
                "Order Completed",
                Some("revenue"),
                365 * D,
                Cmp::Gt,
                10000.0,
            ),
            Rule::Seen(Seen {
                last: true,
                event: Some(ev("Order Completed")),
                test: TimeTest::Ago(Cmp::Lt, Dur(60 * D)),
            }),
            Rule::Not(Box::new(Rule::Or(vec![
                tr("city", Test::Cmp(Cmp::Eq, s("Ankara"))),
                tr("city", Test::Cmp(Cmp::Eq, s("Bursa"))),
            ]))),
        ]),
    );
    // A name may run across lines; `#` inside a string is not a comment.
    check(
        "Order\n  Completed # x\n where note = \"#1\"",
        Rule::Has(events(
            ev_where(
                "Order Completed",
                vec![pt("note", Test::Cmp(Cmp::Eq, s("#1")))],
            ),
            None,
        )),
    );
}

#[test]
fn strings_and_numbers() {
    check(
        r#"trait.x = "a\"b\\c\n\t\r\/\u00e7\ud83d\ude00""#,
        tr("x", Test::Cmp(Cmp::Eq, s("a\"b\\c\n\t\r/ç😀"))),
    );
    for (text, v) in [
        ("0", 0.0),
        ("-0.5", -0.5),
        ("10_000", 10_000.0),
        ("1e3", 1000.0),
        ("1E+3", 1000.0),
        ("2.5e-3", 0.0025),
        ("-1_000.25", -1000.25),
    ] {
        check(
            &format!("age = {text}"),
            Rule::Age(Test::Cmp(Cmp::Eq, Literal::Num(v))),
        );
    }
}

#[test]
fn durations() {
    for (text, ms) in [
        ("500ms", 500),
        ("45s", 45 * S),
        ("30m", 30 * M),
        ("1h", H),
        ("90d", 90 * D),
        ("2w", 14 * D),
        ("36500d", 36_500 * D),
    ] {
        check(&format!("A in {text}"), has("A", Some(ms)));
    }
}

// ---------------------------------------------------------------------------------------
// Bad rules

#[test]
fn error_missing_closing_paren() {
    check_bad("count(Order Completed in 90d >= 2", 1, 30, "`)`", "`>=`");
    check_bad("(trait.x = 1 and age > 3", 1, 25, "`)`", "end of input");
    check_bad(r#"segment("VIP""#, 1, 14, "`)`", "end of input");
    assert_eq!(
        parse("count(Order Completed in 90d >= 2")
            .unwrap_err()
            .to_string(),
        "line 1, column 30: expected `)`, found `>=`"
    );
}

#[test]
fn error_durations() {
    check_bad(
        "Page Viewed in 5y",
        1,
        16,
        "a duration such as 30d (units: ms, s, m, h, d, w)",
        "`5y`",
    );
    check_bad(
        "Page Viewed in 30",
        1,
        16,
        "a duration such as 30d (a number and a unit: ms, s, m, h, d or w)",
        "`30`",
    );
    check_bad(
        "Page Viewed in 1.5d",
        1,
        16,
        "a duration such as 30d (a whole number and a unit)",
        "`1.5d`",
    );
    check_bad(
        "Page Viewed in 0d",
        1,
        16,
        "a duration from 1ms to 100 years",
        "`0d`",
    );
    check_bad(
        "Page Viewed in 36700d",
        1,
        16,
        "a duration from 1ms to 100 years",
        "`36700d`",
    );
    check_bad(
        "A then B in 5m",
        1,
        10,
        "`within` and a duration, as in A then B within 30m",
        "`in`",
    );
}

#[test]
fn error_aggregate_property() {
    check_bad(
        "sum(Order Completed in 365d) > 10",
        1,
        21,
        "`.` and a property: sum needs a property, as in sum(Order Completed.revenue in 365d)",
        "`in`",
    );
    check_bad(
        "distinct(Product Viewed) > 1",
        1,
        24,
        "`.` and a property: distinct needs a property, as in distinct(Product Viewed.category in 30d)",
        "`)`",
    );
    check_bad(
        "count(Order Completed.revenue in 90d) > 1",
        1,
        22,
        "`where`, `in` or `)`: count counts events and takes no property, as in count(Order Completed in 90d)",
        "`.`",
    );
    check_bad("count(X) >= 2d", 1, 13, "a number", "`2d`");
    check_bad(
        "count(X) 2",
        1,
        10,
        "a comparison (=, !=, <, <=, >, >=)",
        "`2`",
    );
    check_bad(
        "count(X where a = 1 and b = 2) > 1",
        1,
        21,
        "`)` (several conditions go in parentheses: where (a = 1 and b = 2))",
        "`and`",
    );
}

#[test]
fn error_strings() {
    check_bad(
        r#"trait.city = "Izmir"#,
        1,
        20,
        "`\"` to end the string started at line 1, column 14",
        "end of input",
    );
    check_bad(
        "trait.city = \"Izmir\n or age > 3",
        1,
        20,
        "`\"` to end the string started at line 1, column 14",
        "end of line",
    );
    check_bad(
        r#"trait.city = "a\qb""#,
        1,
        16,
        "an escape (\\\", \\\\, \\n, \\t, \\r, \\/ or \\uXXXX)",
        "`\\q`",
    );
    check_bad(
        r#"trait.city = "\ud800x""#,
        1,
        15,
        "an escape (\\\", \\\\, \\n, \\t, \\r, \\/ or \\uXXXX)",
        "`\\uD800`",
    );
}

#[test]
fn error_junk_after_rule() {
    check_bad(
        "trait.x = 1 foo",
        1,
        13,
        "`and`, `or` or the end of the rule",
        "`foo`",
    );
    check_bad(
        "Page Viewed in 1d )",
        1,
        19,
        "`and`, `or` or the end of the rule",
        "`)`",
    );
    check_bad(
        "Page Viewed @",
        1,
        13,
        "`and`, `or` or the end of the rule",
        "`@`",
    );
}

#[test]
fn error_empty_and_lone_tokens() {
    check_bad("", 1, 1, "a rule", "end of input");
    check_bad("  # nothing here\n", 1, 1, "a rule", "end of input");
    check_bad("=", 1, 1, "a rule", "`=`");
    check_bad("A and", 1, 6, "a rule", "end of input");
    check_bad("in 5d", 1, 1, "a rule", "`in`");
}

#[test]
fn error_trait_paths() {
    check_bad(
        "trait.",
        1,
        7,
        "a trait name, as in trait.city",
        "end of input",
    );
    check_bad(
        "trait city = 1",
        1,
        7,
        "`.` and a trait name, as in trait.city",
        "`city`",
    );
    check_bad(
        "trait.first-name = 1",
        1,
        7,
        "a trait name, as in trait.city (names with other characters go in quotes: \"first-name\")",
        "`first-name`",
    );
    check_bad(
        "trait.x",
        1,
        8,
        "a test (=, !=, <, <=, >, >=, in, not in, contains, starts_with, between or is null)",
        "end of input",
    );
    check_bad(
        "trait.x < null",
        1,
        11,
        "a number or a string (only = and != work with null)",
        "`null`",
    );
    check_bad("trait.x in [1 2]", 1, 15, "`,` or `]`", "`2`");
}

#[test]
fn error_between_without_and() {
    check_bad(
        "age between 1",
        1,
        14,
        "`and` and a number, as in between 25 and 34",
        "end of input",
    );
    check_bad("age between 1 and x", 1, 19, "a number", "`x`");
}

#[test]
fn error_on_line_three() {
    let text = "segment(\"VIP\")\n  and trait.city = \"İzmir\"\n  and count(Order Completed in 90d) >= lots";
    check_bad(text, 3, 40, "a number", "`lots`");
    let text = "# comment\n\nlast_seen(Ürün Görüntülendi) < 60d";
    check_bad(
        text,
        3,
        35,
        "`ago`, as in last_seen < 30d ago",
        "end of input",
    );
}

#[test]
fn error_too_deep() {
    let ok_text = format!("{}age > 1{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
    assert!(parse(&ok_text).is_ok());
    let text = format!(
        "{}age > 1{}",
        "(".repeat(MAX_DEPTH + 1),
        ")".repeat(MAX_DEPTH + 1)
    );
    let (line, column, expected, found) = bad(&text);
    assert_eq!((line, column, found.as_str()), (1, MAX_DEPTH + 1, "`(`"));
    assert!(expected.contains("at most 64"), "{expected}");

    let ok_text = format!("{}age > 1", "not ".repeat(MAX_DEPTH));
    assert!(parse(&ok_text).is_ok());
    let text = format!("{}age > 1", "not ".repeat(MAX_DEPTH + 1));
    assert_eq!(bad(&text).1, 4 * MAX_DEPTH + 1);

    // Far deeper than the limit: an error, not a stack overflow.
    let text = "(not ".repeat(10_000);
    assert!(bad(&text).2.contains("at most 64"));
}

#[test]
fn error_too_long() {
    let text = format!("A{}", " ".repeat(MAX_LEN));
    let (line, column, expected, _) = bad(&text);
    assert_eq!((line, column), (1, 1));
    assert_eq!(expected, "a rule of at most 64 KiB");
    assert!(parse(&format!("A{}", " ".repeat(MAX_LEN - 1))).is_ok());
}

#[test]
fn columns_count_characters() {
    // `İ`, `ü` and `ö` are two bytes each; the column counts them once.
    check_bad(
        "Ürün Görüntülendi in 5y",
        1,
        22,
        "a duration such as 30d (units: ms, s, m, h, d, w)",
        "`5y`",
    );
}

// ---------------------------------------------------------------------------------------
// JSON form

#[test]
fn json_literals_round_trip() {
    let json = |l: &Literal| serde_json::to_string(l).expect("serialise");
    let back = |j: &str| serde_json::from_str::<Literal>(j).expect("deserialise");
    // An integral number is written `2.0` and read back as the same number.
    assert_eq!(json(&Literal::Num(2.0)), "2.0");
    assert_eq!(back("2.0"), Literal::Num(2.0));
    assert_eq!(back("2"), Literal::Num(2.0));
    assert_eq!(back("-0.5"), Literal::Num(-0.5));
    assert_eq!(back("true"), Literal::Bool(true));
    assert_eq!(back("\"2\""), Literal::Str("2".into()));
    let rule = ok(r#"trait.x in [2, "2", true, -1.5e3]"#);
    let text = serde_json::to_string(&rule).expect("serialise");
    assert_eq!(
        text,
        r#"{"trait":{"name":"x","test":{"in":[2.0,"2",true,-1500.0]}}}"#
    );
    assert_eq!(
        serde_json::from_str::<Rule>(&text).expect("deserialise"),
        rule
    );
}

#[test]
fn json_keeps_every_f64_exactly() {
    // Needs 17 significant digits; read back exactly only when serde_json parses floats
    // with full precision.
    let v = -1.4032589736968405e127;
    let text = serde_json::to_string(&Literal::Num(v)).expect("serialise");
    let back: Literal = serde_json::from_str(&text).expect("deserialise");
    assert_eq!(back, Literal::Num(v), "{text}");
}

// ---------------------------------------------------------------------------------------
// Properties

const NAMES: &[&str] = &[
    "Order Completed",
    "Page Viewed",
    "Product Viewed",
    "No Show",
    "no show",
    "a.b",
    "ç ş",
    "*",
    "Don't-Stop/Now",
    "x  y",
    " leading",
    "say \"hi\"",
    "in",
    "tab\there",
    "_x",
    "Sign Up 2",
    "2 Sign Up",
    "emoji 😀",
    "back\\slash",
    "then within",
];

const PATHS: &[&str] = &[
    "revenue",
    "category",
    "path",
    "a.b",
    "address.city",
    "first name",
    "a..b",
    ".x",
    "x.",
    "0",
    "ş",
    "in",
    "and",
    "null",
    "q\"uote",
    "_",
];

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(NAMES).prop_map(str::to_string),
        1 => "[^\u{0}]{1,12}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(PATHS).prop_map(str::to_string),
        1 => ".{1,12}",
    ]
}

fn number() -> impl Strategy<Value = f64> {
    prop_oneof![
        (-1000i64..1000).prop_map(|n| n as f64),
        (-100_000i64..100_000).prop_map(|n| n as f64 / 100.0),
        proptest::num::f64::NORMAL
            | proptest::num::f64::SUBNORMAL
            | proptest::num::f64::ZERO
            | proptest::num::f64::NEGATIVE
            | proptest::num::f64::POSITIVE,
    ]
}

fn string() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-zçşİ/ ]{0,8}", any::<String>(),]
}

fn literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        any::<bool>().prop_map(Literal::Bool),
        number().prop_map(Literal::Num),
        string().prop_map(Literal::Str),
    ]
}

fn cmp() -> impl Strategy<Value = Cmp> {
    proptest::sample::select(vec![Cmp::Eq, Cmp::Ne, Cmp::Lt, Cmp::Le, Cmp::Gt, Cmp::Ge])
}

fn dur() -> impl Strategy<Value = Dur> {
    prop_oneof![
        (1i64..=MAX_DUR_MS).prop_map(Dur),
        (
            1i64..1000,
            proptest::sample::select(vec![S, M, H, D, 7 * D])
        )
            .prop_map(|(n, u)| Dur(n * u)),
    ]
}

fn test() -> impl Strategy<Value = Test> {
    prop_oneof![
        (cmp(), literal()).prop_map(|(c, l)| Test::Cmp(c, l)),
        proptest::collection::vec(literal(), 0..4).prop_map(Test::In),
        proptest::collection::vec(literal(), 0..4).prop_map(Test::NotIn),
        string().prop_map(Test::Contains),
        string().prop_map(Test::StartsWith),
        (number(), number()).prop_map(|(a, b)| Test::Between(a, b)),
        Just(Test::IsNull),
        Just(Test::IsNotNull),
    ]
}

fn matcher() -> impl Strategy<Value = Match> {
    (
        name(),
        proptest::collection::vec(
            (path(), test()).prop_map(|(prop, test)| PropTest { prop, test }),
            0..3,
        ),
    )
        .prop_map(|(name, filter)| Match { name, filter })
}

fn events_strategy() -> impl Strategy<Value = Events> {
    (matcher(), proptest::option::of(dur())).prop_map(|(event, window)| Events { event, window })
}

fn leaf() -> impl Strategy<Value = Rule> {
    let agg = proptest::sample::select(vec![
        Agg::Count,
        Agg::Sum,
        Agg::Avg,
        Agg::Min,
        Agg::Max,
        Agg::Distinct,
    ]);
    prop_oneof![
        (agg, events_strategy(), path(), cmp(), number()).prop_map(|(agg, of, p, cmp, value)| {
            Rule::Aggregate(Aggregate {
                agg,
                of,
                prop: (agg != Agg::Count).then_some(p),
                cmp,
                value,
            })
        }),
        events_strategy().prop_map(Rule::Has),
        events_strategy().prop_map(Rule::No),
        (matcher(), matcher(), dur(), proptest::option::of(dur())).prop_map(
            |(first, then, within, window)| Rule::Sequence(Sequence {
                first,
                then,
                within,
                window,
            })
        ),
        (
            any::<bool>(),
            proptest::option::of(matcher()),
            prop_oneof![
                (cmp(), dur()).prop_map(|(c, d)| TimeTest::Ago(c, d)),
                Just(TimeTest::IsNull),
                Just(TimeTest::IsNotNull),
            ]
        )
            .prop_map(|(last, event, test)| Rule::Seen(Seen { last, event, test })),
        (path(), test()).prop_map(|(name, test)| Rule::Trait(TraitTest { name, test })),
        test().prop_map(Rule::Age),
        "[^\u{0}]{1,10}".prop_map(Rule::Segment),
    ]
}

/// Well-formed trees: `and`/`or` with 2+ children, names non-empty, numbers finite,
/// a property exactly for aggregates other than `count`, durations in range.
fn rule() -> impl Strategy<Value = Rule> {
    leaf().prop_recursive(5, 48, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 2..4).prop_map(Rule::And),
            proptest::collection::vec(inner.clone(), 2..4).prop_map(Rule::Or),
            inner.prop_map(|r| Rule::Not(Box::new(r))),
        ]
    })
}

/// A few random edits of a text, on character boundaries.
fn mutate(text: &str, edits: &[(usize, u8, char)]) -> String {
    let mut cs: Vec<char> = text.chars().collect();
    for &(at, kind, c) in edits {
        let i = if cs.is_empty() {
            0
        } else {
            at % (cs.len() + 1)
        };
        match kind % 4 {
            0 => cs.insert(i, c),
            1 if i < cs.len() => {
                cs.remove(i);
            }
            2 if i < cs.len() => cs[i] = c,
            _ => {
                let end = (i + at % 7).min(cs.len());
                cs.drain(i..end);
            }
        }
    }
    cs.into_iter().collect()
}

fn rule_char() -> impl Strategy<Value = char> {
    prop_oneof![
        proptest::sample::select(
            "()[].,*=<>!\"\\#-_ \n0123456789eEdmsuw'/"
                .chars()
                .collect::<Vec<_>>()
        ),
        any::<char>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn print_then_parse_gives_the_same_tree(r in rule()) {
        let text = r.to_string();
        prop_assert_eq!(parse(&text), Ok(r.clone()), "printed as {}", text);
    }

    #[test]
    fn json_round_trip_gives_the_same_tree(r in rule()) {
        let json = serde_json::to_string(&r).expect("serialise");
        let back: Rule = serde_json::from_str(&json).expect("deserialise");
        prop_assert_eq!(back, r, "json {}", json);
    }

    #[test]
    fn parse_never_panics_on_any_string(text in any::<String>()) {
        let _ = parse(&text);
    }

    #[test]
    fn parse_never_panics_on_rule_like_text(
        text in proptest::collection::vec(
            prop_oneof![
                rule_char().prop_map(|c| c.to_string()),
                proptest::sample::select(vec![
                    " and ", " or ", "not ", "no ", " in ", " where ", " then ", " within ",
                    "count(", "sum(", "first_seen", "last_seen", "trait.", "age ", "segment(",
                    " between ", " is ", "null", "true", " ago", "30d", "-1.5e3", "\"x\"",
                    "\\u", "\\ud83d", "(", ")",
                ]).prop_map(str::to_string),
            ],
            0..40,
        ).prop_map(|parts| parts.concat())
    ) {
        if let Ok(r) = parse(&text) {
            prop_assert_eq!(parse(&r.to_string()), Ok(r));
        }
    }

    #[test]
    fn parse_never_panics_on_mutated_rules(
        r in rule(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), rule_char()), 1..6),
    ) {
        let text = mutate(&r.to_string(), &edits);
        if let Ok(r) = parse(&text) {
            // Whatever parses prints back to itself.
            prop_assert_eq!(parse(&r.to_string()), Ok(r));
        }
    }
}

#[test]
fn lifetime_value_metrics() {
    check(
        "clv > 500 and p_alive < 0.3",
        Rule::And(vec![
            tr("$clv", Test::Cmp(Cmp::Gt, Literal::Num(500.0))),
            tr("$p_alive", Test::Cmp(Cmp::Lt, Literal::Num(0.3))),
        ]),
    );
    assert_eq!(
        ok("p_alive between 0.2 and 0.4").to_string(),
        "p_alive between 0.2 and 0.4"
    );
    // A trait that happens to be called `clv` stays a trait.
    check(
        "trait.clv > 1",
        tr("clv", Test::Cmp(Cmp::Gt, Literal::Num(1.0))),
    );
    assert!(parse("clv").is_err());
}

#[test]
fn intent_scores() {
    check(
        r#"score("lead") >= 80 and not score("churn risk") > 20"#,
        Rule::And(vec![
            tr("$score:lead", Test::Cmp(Cmp::Ge, Literal::Num(80.0))),
            Rule::Not(Box::new(tr(
                "$score:churn risk",
                Test::Cmp(Cmp::Gt, Literal::Num(20.0)),
            ))),
        ]),
    );
    assert_eq!(
        niyet_rules::scores_read(&ok(
            r#"score("a") > 1 or (score("b") < 2 and score("a") < 9)"#
        )),
        ["a", "b"]
    );
    // `score` needs a name in quotes and a test.
    for bad in [
        r#"score(lead) > 1"#,
        r#"score("") > 1"#,
        r#"score("lead")"#,
        "score > 1",
    ] {
        assert!(parse(bad).is_err(), "{bad}");
    }
    // An event called `score` is written in quotes.
    let r = ok(r#"count("score" in 7d) >= 1"#);
    assert_eq!(parse(&r.to_string()).unwrap(), r);
}
