//! Touchpoints and channels: which marketing channel an event came through.
//!
//! [`classify`] maps what an event says about its origin — the campaign parameters
//! (`utm_source`, `utm_medium`, `utm_campaign` as `context.campaign`), click ids found in
//! the page URL, and the referrer — to one [`Channel`]. Rules given in the configuration
//! ([`Rule`]) are tried first, in order; then the defaults, in this order:
//!
//! 1. medium `email`, `e-mail`, `e_mail`, `newsletter` → **e-mail**
//! 2. medium `push`, `web_push`, `notification`, or source `push` → **push**
//! 3. medium `affiliate`, `affiliates`, `partner` → **affiliate**
//! 4. a Google or Microsoft ads click id (`gclid`, `gbraid`, `wbraid`, `dclid`,
//!    `msclkid`), or a paid medium (`cpc`, `ppc`, `paid`, `paidsearch`, `paid_search`,
//!    `sem`) with a search engine, or with neither a social source nor `fbclid` →
//!    **paid search**
//! 5. a social ads click id (`ttclid`, `twclid`, `li_fat_id`, `ScCid`), `fbclid` with a paid
//!    medium, or a paid medium (`paid_social`, `paidsocial`, `social_paid`, `cpc`, `ppc`,
//!    `paid`) with a social source → **paid social**
//! 6. medium `display`, `banner`, `cpm`, `programmatic`, `video` → **display**
//! 7. medium `social`, `social-network`, `social_network`, `sm`, or a social source,
//!    or `fbclid` → **organic social**
//! 8. medium `organic`, or a referrer on a search engine → **organic search**
//! 9. a referrer on a social site → **organic social**
//! 10. medium `referral`, or any other referrer from another host → **referral**
//! 11. anything else with campaign data → **referral** when it has a source, else **direct**
//! 12. nothing at all → **direct**.
//!
//! Search engines: google, bing, yahoo, yandex, duckduckgo, baidu, ecosia, naver, seznam,
//! qwant. Social sites: facebook, instagram, twitter, x.com, t.co, linkedin, lnkd.in,
//! tiktok, pinterest, youtube, reddit, snapchat, whatsapp, telegram, threads. Names match
//! sources and referrer hosts by label (`m.facebook.com`, `google.com.tr`).

use serde::{Deserialize, Serialize};

/// A marketing channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    PaidSearch,
    OrganicSearch,
    PaidSocial,
    OrganicSocial,
    Email,
    Push,
    Affiliate,
    Display,
    Referral,
    Direct,
}

impl Channel {
    /// Every channel, in index order.
    pub const ALL: [Channel; 10] = [
        Channel::PaidSearch,
        Channel::OrganicSearch,
        Channel::PaidSocial,
        Channel::OrganicSocial,
        Channel::Email,
        Channel::Push,
        Channel::Affiliate,
        Channel::Display,
        Channel::Referral,
        Channel::Direct,
    ];

    /// The channel's name (snake case).
    pub fn name(self) -> &'static str {
        match self {
            Channel::PaidSearch => "paid_search",
            Channel::OrganicSearch => "organic_search",
            Channel::PaidSocial => "paid_social",
            Channel::OrganicSocial => "organic_social",
            Channel::Email => "email",
            Channel::Push => "push",
            Channel::Affiliate => "affiliate",
            Channel::Display => "display",
            Channel::Referral => "referral",
            Channel::Direct => "direct",
        }
    }

    /// The channel of a name, if any.
    pub fn parse(name: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Index in [`Channel::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What an event tells about where it came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// `utm_source` (`context.campaign.source`).
    pub source: Option<String>,
    /// `utm_medium`.
    pub medium: Option<String>,
    /// `utm_campaign` (`context.campaign.name`).
    pub campaign: Option<String>,
    /// Click-id parameter names present in the page URL (`gclid`, `fbclid`, …).
    pub click_ids: Vec<String>,
    /// Host of the referrer, when it is another site than the page's.
    pub referrer_host: Option<String>,
}

impl Origin {
    /// Whether anything marks the event as arriving from somewhere (else it is a page
    /// within a visit, or a direct visit when it starts one).
    pub fn is_touch(&self) -> bool {
        self.source.is_some()
            || self.medium.is_some()
            || self.campaign.is_some()
            || !self.click_ids.is_empty()
            || self.referrer_host.is_some()
    }
}

/// A configured rule: when every given field matches (case-insensitive; `source` also
/// matches the referrer host by label), the channel is `channel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub medium: Option<String>,
    #[serde(default)]
    pub campaign_prefix: Option<String>,
    pub channel: Channel,
}

const SEARCH: &[&str] = &[
    "google",
    "bing",
    "yahoo",
    "yandex",
    "duckduckgo",
    "baidu",
    "ecosia",
    "naver",
    "seznam",
    "qwant",
];
const SOCIAL: &[&str] = &[
    "facebook",
    "fb",
    "instagram",
    "ig",
    "twitter",
    "x",
    "t",
    "linkedin",
    "lnkd",
    "tiktok",
    "pinterest",
    "youtube",
    "reddit",
    "snapchat",
    "whatsapp",
    "telegram",
    "threads",
];

/// Whether `name` (a source or a host) is one of `list`, by label: `m.facebook.com`,
/// `google.com.tr` and `Facebook` all match.
fn is_one_of(name: &str, list: &[&str]) -> bool {
    let n = name.to_ascii_lowercase();
    if list.contains(&n.as_str()) {
        return true;
    }
    // Hosts: a label followed by a public suffix (x.com, t.co, google.com.tr).
    n.contains('.')
        && n.split('.').enumerate().any(|(i, label)| {
            list.contains(&label) && (label.len() > 1 || i + 2 == n.split('.').count())
        })
}

fn lower(v: &Option<String>) -> String {
    v.as_deref().unwrap_or("").trim().to_ascii_lowercase()
}

/// The channel of an event's origin under `rules` (tried first) and the defaults above.
pub fn classify(o: &Origin, rules: &[Rule]) -> Channel {
    let (source, medium) = (lower(&o.source), lower(&o.medium));
    let referrer = o
        .referrer_host
        .as_deref()
        .unwrap_or("")
        .to_ascii_lowercase();
    for r in rules {
        let src_ok = r.source.as_deref().is_none_or(|s| {
            let s = s.to_ascii_lowercase();
            source == s || (!referrer.is_empty() && is_one_of(&referrer, &[s.as_str()]))
        });
        let med_ok = r
            .medium
            .as_deref()
            .is_none_or(|m| medium == m.to_ascii_lowercase());
        let camp_ok = r.campaign_prefix.as_deref().is_none_or(|p| {
            o.campaign
                .as_deref()
                .is_some_and(|c| c.to_ascii_lowercase().starts_with(&p.to_ascii_lowercase()))
        });
        if src_ok && med_ok && camp_ok {
            return r.channel;
        }
    }
    let click = |names: &[&str]| {
        o.click_ids
            .iter()
            .any(|c| names.iter().any(|n| c.eq_ignore_ascii_case(n)))
    };
    let social_source = !source.is_empty() && is_one_of(&source, SOCIAL);
    let search_source = !source.is_empty() && is_one_of(&source, SEARCH);
    let paid = matches!(
        medium.as_str(),
        "cpc" | "ppc" | "paid" | "paidsearch" | "paid_search" | "sem"
    );
    let paid_social_medium = matches!(
        medium.as_str(),
        "paid_social" | "paidsocial" | "social_paid"
    );
    if matches!(
        medium.as_str(),
        "email" | "e-mail" | "e_mail" | "newsletter"
    ) {
        return Channel::Email;
    }
    if matches!(medium.as_str(), "push" | "web_push" | "notification") || source == "push" {
        return Channel::Push;
    }
    if matches!(medium.as_str(), "affiliate" | "affiliates" | "partner") {
        return Channel::Affiliate;
    }
    let fbclid = click(&["fbclid"]);
    if click(&["gclid", "gbraid", "wbraid", "dclid", "msclkid"])
        || (paid && (search_source || !(social_source || fbclid)))
    {
        return Channel::PaidSearch;
    }
    if click(&["ttclid", "twclid", "li_fat_id", "sccid"])
        || paid_social_medium
        || (paid && (social_source || fbclid))
    {
        return Channel::PaidSocial;
    }
    if matches!(
        medium.as_str(),
        "display" | "banner" | "cpm" | "programmatic" | "video"
    ) {
        return Channel::Display;
    }
    if matches!(
        medium.as_str(),
        "social" | "social-network" | "social_network" | "sm"
    ) || social_source
        || fbclid
    {
        return Channel::OrganicSocial;
    }
    if medium == "organic" || (!referrer.is_empty() && is_one_of(&referrer, SEARCH)) {
        return Channel::OrganicSearch;
    }
    if !referrer.is_empty() && is_one_of(&referrer, SOCIAL) {
        return Channel::OrganicSocial;
    }
    if medium == "referral" || !referrer.is_empty() || !source.is_empty() {
        return Channel::Referral;
    }
    Channel::Direct
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn o(source: &str, medium: &str, clicks: &[&str], referrer: &str) -> Origin {
        let s = |v: &str| (!v.is_empty()).then(|| v.to_string());
        Origin {
            source: s(source),
            medium: s(medium),
            campaign: None,
            click_ids: clicks.iter().map(|c| c.to_string()).collect(),
            referrer_host: s(referrer),
        }
    }

    #[test]
    fn the_default_rules() {
        for (origin, want) in [
            (o("newsletter", "email", &[], ""), Channel::Email),
            (o("app", "push", &[], ""), Channel::Push),
            (o("partnerx", "affiliate", &[], ""), Channel::Affiliate),
            (o("google", "cpc", &[], ""), Channel::PaidSearch),
            (o("", "", &["gclid"], "www.google.com"), Channel::PaidSearch),
            (o("facebook", "cpc", &[], ""), Channel::PaidSocial),
            (o("instagram", "paid_social", &[], ""), Channel::PaidSocial),
            (o("", "", &["ttclid"], ""), Channel::PaidSocial),
            (o("meta", "cpc", &["fbclid"], ""), Channel::PaidSocial),
            (
                o("", "", &["fbclid"], "m.facebook.com"),
                Channel::OrganicSocial,
            ),
            (o("gdn", "display", &[], ""), Channel::Display),
            (o("instagram", "social", &[], ""), Channel::OrganicSocial),
            (o("", "", &[], "www.google.com.tr"), Channel::OrganicSearch),
            (o("", "", &[], "duckduckgo.com"), Channel::OrganicSearch),
            (o("", "", &[], "t.co"), Channel::OrganicSocial),
            (o("", "", &[], "l.instagram.com"), Channel::OrganicSocial),
            (o("", "", &[], "blog.example.org"), Channel::Referral),
            (o("hurriyet", "", &[], ""), Channel::Referral),
            (o("", "", &[], ""), Channel::Direct),
        ] {
            assert_eq!(classify(&origin, &[]), want, "{origin:?}");
        }
    }

    #[test]
    fn configured_rules_come_first() {
        let rules = [Rule {
            source: Some("criteo".into()),
            medium: None,
            campaign_prefix: None,
            channel: Channel::Display,
        }];
        assert_eq!(
            classify(&o("criteo", "cpc", &[], ""), &rules),
            Channel::Display
        );
        assert_eq!(
            classify(&o("criteo", "cpc", &[], ""), &[]),
            Channel::PaidSearch
        );
        // A host named like a short social label only matches as a whole label before
        // the suffix: "t.co" is social, "my.t.example.com" is not.
        assert!(is_one_of("t.co", SOCIAL));
        assert!(!is_one_of("shop.t.example.com", SOCIAL));
        assert_eq!(Channel::parse("paid_social"), Some(Channel::PaidSocial));
        assert!(Channel::ALL.iter().enumerate().all(|(i, c)| c.index() == i));
    }
}
