//! The cast of the seeds' story: who the leads are and what they do, as data.
//!
//! Times are days before the demo runs, so the journey spans about three weeks of back-dated
//! activity (months for the lead that went cold) and then plays out live.

use leadflow_proto::common::v1::{Profile, Seniority, SourceChannel};

/// One thing a lead does.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Act {
    /// How many days before now it happened.
    pub(crate) days_ago: i64,
    /// The activity type.
    pub(crate) kind: &'static str,
    /// Its properties.
    pub(crate) properties: &'static [(&'static str, &'static str)],
    /// What happened, in words.
    pub(crate) what: &'static str,
}

/// A lead of the story.
#[derive(Debug, Clone)]
pub(crate) struct Person {
    /// The short name the demo prints.
    pub(crate) name: &'static str,
    /// The profile sent to ingestion.
    pub(crate) profile: Profile,
    /// What the lead does before the demo watches, oldest first.
    pub(crate) acts: Vec<Act>,
}

/// What the SDR learns from Dana on the call (the BANT).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Discovery {
    /// The need in Dana's words.
    pub(crate) need: &'static str,
    /// Days until Dana's company decides.
    pub(crate) decision_in_days: i64,
    /// The SDR's notes.
    pub(crate) notes: &'static str,
}

/// The deal Dana's company signs.
pub(crate) const DEAL_EUR: i64 = 24_000;

/// The SDR's discovery call with Dana.
pub(crate) const DANA_DISCOVERY: Discovery = Discovery {
    need: "replace spreadsheets",
    decision_in_days: 80,
    notes: "budget expected next quarter",
};

/// A profile with the fields the story uses.
fn profile(
    (first, last, email): (&str, &str, &str),
    (title, seniority): (&str, Seniority),
    (company, size, industry, country): (&str, i32, &str, &str),
    source: SourceChannel,
) -> Profile {
    let domain = email.split_once('@').map(|(_, d)| d.to_owned());
    Profile {
        email: Some(email.to_owned()),
        first_name: Some(first.to_owned()),
        last_name: Some(last.to_owned()),
        title: Some(title.to_owned()),
        seniority: seniority as i32,
        company: Some(company.to_owned()),
        company_domain: domain,
        company_size: Some(size),
        industry: Some(industry.to_owned()),
        country: Some(country.to_owned()),
        source_channel: source as i32,
        ..Default::default()
    }
}

/// The seeds' marketing manager at a tech company: a guide, three e-mails, pricing twice → MQL.
pub(crate) fn dana() -> Person {
    Person {
        name: "dana",
        profile: profile(
            ("Dana", "Weber", "dana.weber@brightloop.io"),
            ("Marketing Manager", Seniority::Manager),
            ("Brightloop", 200, "Software", "DE"),
            SourceChannel::PaidSearch,
        ),
        acts: vec![
            Act {
                days_ago: 22,
                kind: "content_download",
                properties: &[("asset_id", "guide-7-strategies-b2b-conversion")],
                what: "downloads the guide \"7 strategies to lift b2b conversion\"",
            },
            Act {
                days_ago: 19,
                kind: "email_open",
                properties: &[("asset_id", "nurture-1")],
                what: "opens e-mail 1 of the nurture series",
            },
            Act {
                days_ago: 14,
                kind: "email_open",
                properties: &[("asset_id", "nurture-2")],
                what: "opens e-mail 2",
            },
            Act {
                days_ago: 9,
                kind: "email_open",
                properties: &[("asset_id", "nurture-3")],
                what: "opens e-mail 3",
            },
            Act {
                days_ago: 6,
                kind: "page_view",
                properties: &[("path", "/pricing")],
                what: "visits pricing",
            },
            Act {
                days_ago: 2,
                kind: "page_view",
                properties: &[("path", "/pricing")],
                what: "visits pricing again",
            },
        ],
    }
}

/// Dana's hand-raise, once an SDR has accepted her.
pub(crate) const LETS_TALK: Act = Act {
    days_ago: 0,
    kind: "contact_sales",
    properties: &[("form", "lets-talk")],
    what: "clicks \"let's talk\"",
};

/// A student with a free-mail address who read one blog post: stays a lead.
pub(crate) fn noa() -> Person {
    Person {
        name: "noa",
        profile: profile(
            ("Noa", "Levi", "noa.levi@gmail.com"),
            ("Student", Seniority::Student),
            ("Tel Aviv University", 30_000, "Education", "IL"),
            SourceChannel::OrganicSearch,
        ),
        acts: vec![Act {
            days_ago: 3,
            kind: "page_view",
            properties: &[("path", "/blog/mql-vs-sql")],
            what: "reads the blog post \"mql vs sql\"",
        }],
    }
}

/// A fitting lead whose interest is months old: decay keeps it under the threshold.
pub(crate) fn chris() -> Person {
    Person {
        name: "chris",
        profile: profile(
            ("Chris", "Park", "chris.park@northwind-data.com"),
            ("Head of Demand Generation", Seniority::Director),
            ("Northwind Data", 1_200, "SaaS", "US"),
            SourceChannel::Email,
        ),
        acts: vec![
            Act {
                days_ago: 170,
                kind: "webinar_attended",
                properties: &[("asset_id", "webinar-scoring-101")],
                what: "attends the webinar \"scoring 101\"",
            },
            Act {
                days_ago: 168,
                kind: "email_open",
                properties: &[("asset_id", "webinar-follow-up")],
                what: "opens the follow-up e-mail",
            },
            Act {
                days_ago: 165,
                kind: "content_download",
                properties: &[("asset_id", "guide-7-strategies-b2b-conversion")],
                what: "downloads the guide",
            },
            Act {
                days_ago: 160,
                kind: "pricing_view",
                properties: &[],
                what: "visits pricing",
            },
            Act {
                days_ago: 158,
                kind: "pricing_view",
                properties: &[],
                what: "visits pricing again",
            },
            Act {
                days_ago: 150,
                kind: "email_open",
                properties: &[("asset_id", "newsletter-june")],
                what: "opens a newsletter",
            },
        ],
    }
}

/// An engaged one-person consultancy: an MQL by the numbers that the SDR rejects as not the
/// ideal customer profile.
pub(crate) fn robin() -> Person {
    Person {
        name: "robin",
        profile: profile(
            ("Robin", "Hale", "robin@halegrowth.co"),
            ("Growth Consultant", Seniority::Owner),
            ("Hale Growth", 3, "Consulting", "GB"),
            SourceChannel::PaidSocial,
        ),
        acts: vec![
            Act {
                days_ago: 12,
                kind: "webinar_attended",
                properties: &[("asset_id", "webinar-scoring-101")],
                what: "attends the webinar",
            },
            Act {
                days_ago: 10,
                kind: "content_download",
                properties: &[("asset_id", "guide-7-strategies-b2b-conversion")],
                what: "downloads the guide",
            },
            Act {
                days_ago: 10,
                kind: "content_download",
                properties: &[("asset_id", "template-lead-scoring")],
                what: "downloads the scoring template",
            },
            Act {
                days_ago: 8,
                kind: "email_open",
                properties: &[("asset_id", "nurture-1")],
                what: "opens an e-mail",
            },
            Act {
                days_ago: 4,
                kind: "email_open",
                properties: &[("asset_id", "nurture-2")],
                what: "opens an e-mail",
            },
            Act {
                days_ago: 3,
                kind: "pricing_view",
                properties: &[],
                what: "visits pricing",
            },
            Act {
                days_ago: 2,
                kind: "pricing_view",
                properties: &[],
                what: "visits pricing",
            },
            Act {
                days_ago: 1,
                kind: "pricing_view",
                properties: &[],
                what: "visits pricing",
            },
        ],
    }
}
