//! What several gateway test binaries share.

use kurir_backends::{Backends, NodeId, NotificationId};
use kurir_proto::internal::v1::{envelope::Kind, Delivery, Envelope, Recipient};
use kurir_proto::v1::Notification;
use prost::Message as _;

/// A live notification to `user`, as the dispatcher routes it to `node`.
pub async fn notify(backends: &Backends, node: &NodeId, user: &str, title: &str) {
    let env = Envelope {
        kind: Some(Kind::Delivery(Delivery {
            id: NotificationId::generate().to_string(),
            notification: Some(Notification {
                title: title.into(),
                ..Default::default()
            }),
            created_at: 1,
            recipients: vec![Recipient {
                user_id: user.into(),
                cursor: String::new(),
            }],
            ..Default::default()
        })),
    };
    backends
        .bus
        .publish(
            backends.namespace.node_subject(node),
            env.encode_to_vec().into(),
        )
        .await
        .unwrap();
}
