//! The oracle's rooms: members of both accounts in a room of the same name,
//! each account's room its own. Every chat message must reach exactly the
//! members of the sender's account, once, and no roster may name a stranger.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::model::Who;
use super::subs::{Inbox, Shared, Spec, Transport, spawn};
use crate::harness::{Server, eventually};

const ROOM: &str = "subscription($n: String!) { room(name: $n) { room kind payload from { peerId userId email } at } }";
const SEND: &str =
    "mutation($r: String!, $k: String!, $p: JSON) { sendToRoom(room: $r, kind: $k, payload: $p) }";
const NAME: &str = "lobby";

struct Member {
    who: usize,
    inbox: Shared,
    task: JoinHandle<()>,
}

/// The room's members and the messages sent.
#[derive(Default)]
pub struct Rooms {
    members: Vec<Member>,
    /// (account, message number) of each message sent.
    sent: Vec<(usize, u64)>,
}

impl Rooms {
    /// Joins `members` (indices into `who`, signed-in viewers) over `transports`
    /// and waits for each one's roster (the proof it is in).
    pub async fn join(s: &Server, who: &[Who], members: &[(usize, Transport)]) -> Rooms {
        let mut rooms = Rooms::default();
        for &(w, transport) in members {
            let spec = Spec {
                transport,
                query: ROOM.into(),
                variables: json!({ "n": NAME }),
                field: "room".into(),
                token: who[w].token.clone(),
                account: None,
                feed_collections: None,
                after: None,
                last_event_id: false,
            };
            let inbox: Shared = Arc::new(Mutex::new(Inbox::default()));
            let task = spawn(s.base.clone(), spec, inbox.clone());
            rooms.members.push(Member {
                who: w,
                inbox,
                task,
            });
        }
        for m in &rooms.members {
            let joined = eventually(Duration::from_secs(20), || {
                let inbox = m.inbox.lock().unwrap_or_else(|e| e.into_inner());
                inbox.events.iter().any(|e| e["kind"] == "presence")
            })
            .await;
            assert!(joined, "{} joined the room", who[m.who].name);
        }
        rooms
    }

    /// `who[w]` (a member) sends message number `n`.
    pub async fn send(&mut self, s: &Server, who: &[Who], w: usize, n: u64) -> Option<String> {
        let body = s
            .gql_as(
                who[w].token.as_deref(),
                SEND,
                json!({ "r": NAME, "k": "chat", "p": { "n": n } }),
            )
            .await;
        if body["data"]["sendToRoom"] != json!(true) {
            return Some(format!("sendToRoom by {} failed: {body}", who[w].name));
        }
        self.sent.push((who[w].account, n));
        None
    }

    pub fn member_indices(&self) -> Vec<usize> {
        self.members.iter().map(|m| m.who).collect()
    }

    fn chats(inbox: &Inbox) -> Vec<u64> {
        inbox
            .events
            .iter()
            .filter(|e| e["kind"] == "chat")
            .filter_map(|e| e["payload"]["n"].as_u64())
            .collect()
    }

    /// Waits for every member's messages, then lists what went wrong; returns
    /// the number of messages checked too.
    pub async fn check(
        self,
        who: &[Who],
        account_of_user: &HashMap<String, usize>,
    ) -> (usize, Vec<String>) {
        let expect = |a: usize| -> Vec<u64> {
            self.sent
                .iter()
                .filter(|(acc, _)| *acc == a)
                .map(|(_, n)| *n)
                .collect()
        };
        for m in &self.members {
            let n = expect(who[m.who].account).len();
            eventually(Duration::from_secs(10), || {
                Self::chats(&m.inbox.lock().unwrap_or_else(|e| e.into_inner())).len() >= n
            })
            .await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut problems = Vec::new();
        let mut checked = 0;
        for m in self.members {
            m.task.abort();
            let me = &who[m.who];
            let inbox = m.inbox.lock().unwrap_or_else(|e| e.into_inner());
            let mut got = Self::chats(&inbox);
            let mut want = expect(me.account);
            checked += want.len();
            got.sort_unstable();
            want.sort_unstable();
            if got != want {
                problems.push(format!(
                    "room member {}: chat messages {got:?}, expected {want:?}",
                    me.name
                ));
            }
            // Nobody of another account in any roster, join, leave or `from`.
            for e in &inbox.events {
                let mut users: Vec<&Value> = vec![&e["from"]["userId"]];
                users.extend(
                    e["payload"]["members"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|m| &m["userId"]),
                );
                users.push(&e["payload"]["member"]["userId"]);
                for u in users.iter().filter_map(|u| u.as_str()) {
                    if account_of_user.get(u) != Some(&me.account) {
                        problems.push(format!(
                            "room member {} saw user {u} of another account: {e}",
                            me.name
                        ));
                    }
                }
            }
            if !inbox.errors.is_empty() || !inbox.ended.is_empty() {
                problems.push(format!(
                    "room member {}: errors {:?}, ended {:?}",
                    me.name, inbox.errors, inbox.ended
                ));
            }
        }
        (checked, problems)
    }
}
