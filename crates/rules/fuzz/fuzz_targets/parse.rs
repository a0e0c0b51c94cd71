//! Parses arbitrary UTF-8. The parser must never panic, and whatever parses must print
//! back to text that parses to the same tree.

#![no_main]

use libfuzzer_sys::fuzz_target;
use niyet_rules::parse::MAX_LEN;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(rule) = niyet_rules::parse(text) else {
        return;
    };
    let printed = rule.to_string();
    if printed.len() > MAX_LEN {
        // Escapes can make the printed form longer than the input; past the length limit
        // it is rejected by design.
        return;
    }
    match niyet_rules::parse(&printed) {
        Ok(again) => assert_eq!(again, rule, "{text:?} printed as {printed:?}"),
        Err(e) => panic!("{text:?} printed as {printed:?}, which does not parse: {e}"),
    }
});
