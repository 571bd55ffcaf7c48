//! The MQTT topic names Kurir answers to, and which of them a notification goes out on:
//! `kurir/user` carries the connected user's own notifications (the user comes from the
//! token, never from the topic), `kurir/topic/<name>` a topic's. Every other filter,
//! wildcards and `kurir/user/<someone>` included, is refused.

/// The topic of the connected user's notifications.
pub const USER: &str = "kurir/user";

/// The prefix of topic publishes: `kurir/topic/<name>`.
pub const TOPIC_PREFIX: &str = "kurir/topic/";

/// What a subscription filter names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter<'a> {
    /// `kurir/user`.
    User,
    /// `kurir/topic/<name>`: the name, checked by the token's topic rules later.
    Topic(&'a str),
    /// Anything else: refused in SUBACK.
    Refused,
}

impl<'a> Filter<'a> {
    pub fn parse(filter: &'a str) -> Self {
        if filter == USER {
            return Self::User;
        }
        match filter.strip_prefix(TOPIC_PREFIX) {
            // Wildcards would reach topics the token was never checked against.
            Some(name) if !name.is_empty() && !name.contains(['+', '#']) => Self::Topic(name),
            _ => Self::Refused,
        }
    }
}

/// The MQTT topic of a topic notification.
pub fn of_topic(name: &str) -> String {
    let mut t = String::with_capacity(TOPIC_PREFIX.len() + name.len());
    t.push_str(TOPIC_PREFIX);
    t.push_str(name);
    t
}

/// The `topic` field of a notification's JSON (`None`: a broadcast, or not a topic's).
pub fn named_in(payload: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Named {
        topic: Option<String>,
    }
    serde_json::from_slice::<Named>(payload).ok()?.topic
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_users_own_topic_and_named_topics_are_accepted() {
        assert_eq!(Filter::parse("kurir/user"), Filter::User);
        assert_eq!(Filter::parse("kurir/topic/news"), Filter::Topic("news"));
        for refused in [
            "kurir/user/bob",
            "kurir/user/#",
            "kurir/#",
            "#",
            "kurir/+",
            "kurir/topic/",
            "kurir/topic/#",
            "kurir/topic/a+b",
            "other",
        ] {
            assert_eq!(Filter::parse(refused), Filter::Refused, "{refused}");
        }
    }

    #[test]
    fn the_topic_comes_from_the_notification() {
        assert_eq!(
            named_in(br#"{"type":"notification","topic":"news","id":"x"}"#).as_deref(),
            Some("news")
        );
        assert_eq!(named_in(br#"{"type":"notification","topic":null}"#), None);
        assert_eq!(of_topic("news"), "kurir/topic/news");
    }
}
