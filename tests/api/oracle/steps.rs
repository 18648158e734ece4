//! The oracle's script: random writes (refused ones included), new and resumed
//! subscribers, multi-root attempts and room messages; then the comparison.

use super::*;

/// Subscription documents with two root fields: each must be refused.
const MULTI_ROOT: [&str; 4] = [
    "subscription { boardChanged { id } changes { cursor } }",
    "subscription { a: changes { cursor } b: changes { cursor } }",
    "subscription { changes { cursor } __typename }",
    "subscription { memoChanged { id } ... on Subscription { linkChanged { id } } }",
];

impl Run {
    /// Runs `steps` random steps and checks everything; stops the server.
    pub(super) async fn go(mut self, steps: u64) -> Tally {
        let account_ids: Vec<String> = (0..SLUGS.len())
            .map(|a| {
                let admin = self.who.iter().find(|w| w.account == a && w.admin);
                admin.map(|w| w.account_id.clone()).unwrap_or_default()
            })
            .collect();
        for a in 0..SLUGS.len() {
            let admin = self
                .who
                .iter()
                .position(|w| w.account == a && w.admin)
                .unwrap_or(0);
            let i = self.open(admin, Sel::Changes { colls: None }, Transport::Ws, None);
            self.tracers.push(i);
        }
        // Every viewer watches the owner-read and the admin-read collection and
        // the one with refs, so that every seed tests the narrowest scopes and
        // nested refs; then random subscribers.
        for w in 0..self.who.len() {
            for coll in [SECRETS, AUDITS, LINKS] {
                let t = *Transport::ALL
                    .choose(&mut self.rng)
                    .unwrap_or(&Transport::Ws);
                let sel = Sel::Changed {
                    coll,
                    actions: None,
                    filter: None,
                };
                self.open(w, sel, t, None);
            }
        }
        for _ in 0..10 {
            let w = self.rng.random_range(0..self.who.len());
            let sel = self.random_sel();
            let t = *Transport::ALL
                .choose(&mut self.rng)
                .unwrap_or(&Transport::Ws);
            self.open(w, sel, t, None);
        }
        let signed_in: Vec<usize> = (0..self.who.len())
            .filter(|&w| self.who[w].user_id.is_some())
            .collect();
        let mut members: Vec<(usize, Transport)> = Vec::new();
        for w in signed_in {
            if self.rng.random_bool(0.6) {
                let t = [Transport::Ws, Transport::Legacy, Transport::SseDistinct];
                members.push((w, *t.choose(&mut self.rng).unwrap_or(&Transport::Ws)));
            }
        }
        let mut rooms = Rooms::join(&self.s, &self.who, &members).await;
        self.settle().await;

        let mut message = 0u64;
        for _ in 0..steps {
            match self.rng.random_range(0..100) {
                0..75 => self.write().await,
                75..83 => {
                    let in_room = rooms.member_indices();
                    if let Some(&w) = in_room.choose(&mut self.rng) {
                        message += 1;
                        if let Some(p) = rooms.send(&self.s, &self.who, w, message).await {
                            self.tally.problems.push(p);
                        }
                    }
                }
                83..90 => self.open_after(),
                90..96 => self.resume().await,
                _ => self.multi_root().await,
            }
        }
        let account_of_user: HashMap<String, usize> = self
            .who
            .iter()
            .filter_map(|w| w.user_id.clone().map(|u| (u, w.account)))
            .collect();
        let (checked, problems) = rooms.check(&self.who, &account_of_user).await;
        self.tally.room_messages += checked;
        self.tally.problems.extend(problems);
        self.compare(&account_ids).await;
        let Run { s, mut tally, .. } = self;
        s.stop().await;
        tally
            .problems
            .iter_mut()
            .for_each(|p| p.insert_str(0, "  "));
        tally
    }

    /// Waits until every open subscriber is on the bus (the subscriptions gauge
    /// counts them), with a margin: live subscribers expect every later write.
    async fn settle(&mut self) {
        let ready = |subs: &[Sub]| {
            subs.iter()
                .all(|s| s.inbox.lock().unwrap_or_else(|e| e.into_inner()).ready)
        };
        let subs = &self.subs;
        assert!(
            eventually(Duration::from_secs(20), || ready(subs)).await,
            "subscribers connect"
        );
        let graphql = subs
            .iter()
            .filter(|s| s.spec.transport != Transport::Feed && s.refused.is_none())
            .count() as i64;
        let gauge = self.s.state.metrics().subscriptions.clone();
        eventually(Duration::from_secs(20), || gauge.get() >= graphql).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    /// Opens a subscriber that starts after an earlier write's cursor.
    fn open_after(&mut self) {
        let with_cursor: Vec<usize> = (0..self.model.log.len())
            .filter(|&i| self.model.log[i].seq.is_some())
            .collect();
        let Some(&i) = with_cursor.choose(&mut self.rng) else {
            return;
        };
        let w = self.rng.random_range(0..self.who.len());
        let sel = self.random_sel();
        let t = *Transport::ALL
            .choose(&mut self.rng)
            .unwrap_or(&Transport::Ws);
        self.open(w, sel, t, Some(i));
    }

    /// Closes a subscriber that has a cursor and reopens it after that cursor,
    /// maybe over another transport: it must miss nothing and repeat nothing.
    async fn resume(&mut self) {
        let candidates: Vec<usize> = (0..self.subs.len())
            .filter(|&i| !self.tracers.contains(&i) && self.subs[i].refused.is_none())
            .filter(|&i| {
                let inbox = self.subs[i].inbox.lock().unwrap_or_else(|e| e.into_inner());
                !inbox.events.is_empty() && inbox.ended.is_empty()
            })
            .collect();
        let Some(&i) = candidates.choose(&mut self.rng) else {
            return;
        };
        let t = *Transport::ALL
            .choose(&mut self.rng)
            .unwrap_or(&Transport::Ws);
        // The feed speaks only `changes`; the others speak both.
        let t = match (&self.subs[i].sel, t) {
            (Sel::Changed { .. }, Transport::Feed) => Transport::Ws,
            _ => t,
        };
        let last_event_id =
            self.rng.random_bool(0.5) && matches!(t, Transport::SseDistinct | Transport::Feed);
        let sub = &mut self.subs[i];
        sub.task.abort();
        let _ = (&mut sub.task).await;
        let cursor = {
            let inbox = sub.inbox.lock().unwrap_or_else(|e| e.into_inner());
            inbox.events.last().map(|e| cursor_of(e).to_string())
        };
        sub.spec.transport = t;
        sub.spec.after = cursor;
        sub.spec.last_event_id = last_event_id;
        sub.resumes += 1;
        sub.task = spawn(self.s.base.clone(), sub.spec.clone(), sub.inbox.clone());
        self.tally.resumes += 1;
    }

    /// A subscription with two root fields: refused with
    /// GRAPHQL_VALIDATION_FAILED before anything runs.
    async fn multi_root(&mut self) {
        let w = self.rng.random_range(0..self.who.len());
        let doc = MULTI_ROOT.choose(&mut self.rng).unwrap_or(&MULTI_ROOT[0]);
        let t = [
            Transport::Ws,
            Transport::Legacy,
            Transport::SseDistinct,
            Transport::SseSingle,
        ];
        let t = *t.choose(&mut self.rng).unwrap_or(&Transport::Ws);
        let mut spec = self.spec(w, &Sel::Changes { colls: None }, t);
        spec.query = doc.to_string();
        spec.variables = json!({});
        let inbox: Shared = Arc::new(Mutex::new(Inbox::default()));
        let task = spawn(self.s.base.clone(), spec, inbox.clone());
        eventually(Duration::from_secs(10), || {
            !inbox
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .errors
                .is_empty()
        })
        .await;
        task.abort();
        let inbox = inbox.lock().unwrap_or_else(|e| e.into_inner());
        if inbox.errors != ["GRAPHQL_VALIDATION_FAILED"] || !inbox.events.is_empty() {
            self.tally.problems.push(format!(
                "{doc} by {} over {t:?}: errors {:?}, events {:?}",
                self.who[w].name, inbox.errors, inbox.events
            ));
        }
    }

    /// One random write by a random viewer, its outcome predicted by the model.
    async fn write(&mut self) {
        let w = self.rng.random_range(0..self.who.len());
        let who = self.who[w].clone();
        let ids: Vec<String> = self.model.rows.keys().cloned().collect();
        let mut ids = ids;
        ids.sort();
        let op = self.rng.random_range(0..10);
        // Mostly rows the writer's account still has, so that most writes succeed.
        let near: Vec<&String> = ids
            .iter()
            .filter(|i| {
                self.model.rows[*i].account == who.account && !self.model.deleted.contains(*i)
            })
            .collect();
        let target = match near.choose(&mut self.rng) {
            Some(&id) if self.rng.random_bool(0.75) => Some(id.clone()),
            _ => ids.choose(&mut self.rng).cloned(),
        };
        let (expected, query, vars, action, coll) = match (op, target) {
            (4..10, Some(id)) => {
                let row = self.model.rows[&id].clone();
                let c = &COLLS[row.coll];
                let gone = self.model.deleted.contains(&id);
                if op < 8 {
                    let mut input = json!({});
                    if self.rng.random_bool(0.7) {
                        input["title"] = json!(TITLES.choose(&mut self.rng).unwrap_or(&"red"));
                    }
                    if self.rng.random_bool(0.5) || input["title"].is_null() {
                        input["published"] = json!(self.rng.random_bool(0.5));
                    }
                    let q = format!(
                        "mutation($id: ID!, $i: {ty}UpdateInput!) {{ update{ty}(id: $id, input: $i) {{ id }} }}",
                        ty = c.ty
                    );
                    let e = write_refused(&who, &row, gone, c.update);
                    (e, q, json!({ "id": id, "i": input }), "UPDATE", row.coll)
                } else {
                    let q = format!(
                        "mutation($id: ID!) {{ delete{ty}(id: $id) {{ id }} }}",
                        ty = c.ty
                    );
                    let e = write_refused(&who, &row, gone, c.delete);
                    (e, q, json!({ "id": id }), "DELETE", row.coll)
                }
            }
            _ => {
                let coll = self.rng.random_range(0..COLLS.len());
                let c = &COLLS[coll];
                let mut input = json!({ "title": TITLES.choose(&mut self.rng).unwrap_or(&"red") });
                if self.rng.random_bool(0.7) {
                    input["published"] = json!(self.rng.random_bool(0.5));
                }
                let mut bad_ref = false;
                for (field, target) in c.refs {
                    let pool: Vec<&String> = ids
                        .iter()
                        .filter(|i| self.model.rows[*i].coll == *target)
                        .collect();
                    if self.rng.random_bool(0.3) {
                        continue;
                    }
                    if let Some(&id) = pool.choose(&mut self.rng) {
                        let row = &self.model.rows[id];
                        bad_ref |=
                            self.model.deleted.contains(id) || !model::may_read_row(&who, row);
                        input[format!("{field}Id")] = json!(id);
                    }
                }
                let q = format!(
                    "mutation($i: {ty}CreateInput!) {{ create{ty}(input: $i) {{ id }} }}",
                    ty = c.ty
                );
                let e = create_refused(&who, coll).or(bad_ref.then_some("BAD_USER_INPUT"));
                (e, q, json!({ "i": input }), "CREATE", coll)
            }
        };
        let account = self.account_of(w);
        let headers: Vec<(&str, &str)> = account
            .as_deref()
            .map(|a| vec![("x-account", a)])
            .unwrap_or_default();
        let (_, body) = self
            .s
            .post(who.token.as_deref(), &headers, &query, vars.clone())
            .await;
        let got = body["errors"][0]["extensions"]["code"].as_str();
        self.tally.writes += 1;
        if got != expected {
            self.tally.problems.push(format!(
                "{} by {}: expected {:?}, got {body} ({vars})",
                query.split('(').next().unwrap_or_default(),
                who.name,
                expected.unwrap_or("success")
            ));
        }
        if got.is_some() {
            self.tally.refused_writes += 1;
            return;
        }
        // Apply what happened (even if unexpected) so later checks stay meaningful.
        let input = &vars["i"];
        let (row, prev) = match action {
            "CREATE" => {
                let id = body["data"][format!("create{}", COLLS[coll].ty)]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let refs = COLLS[coll]
                    .refs
                    .iter()
                    .map(|(f, _)| input[format!("{f}Id")].as_str().map(str::to_string))
                    .collect();
                let row = Row {
                    id,
                    coll,
                    account: who.account,
                    owner: who.user_id.clone(),
                    title: input["title"].as_str().unwrap_or_default().to_string(),
                    published: input["published"].as_bool().unwrap_or(false),
                    refs,
                };
                (row, None)
            }
            _ => {
                let id = vars["id"].as_str().unwrap_or_default();
                let prev = self.model.rows[id].clone();
                let mut row = prev.clone();
                if action == "UPDATE" {
                    if let Some(t) = input["title"].as_str() {
                        row.title = t.to_string();
                    }
                    if let Some(p) = input["published"].as_bool() {
                        row.published = p;
                    }
                } else {
                    self.model.deleted.insert(id.to_string());
                }
                (row, Some(prev))
            }
        };
        self.model.rows.insert(row.id.clone(), row.clone());
        let account = row.account;
        self.model.log.push(Ev {
            action,
            row,
            prev,
            seq: None,
        });
        if coll != VAULTS {
            self.trace(account).await;
        }
    }

    /// Learns the cursor of the write just made from its account's tracer.
    async fn trace(&mut self, account: usize) {
        let n = self
            .model
            .log
            .iter()
            .filter(|e| e.row.account == account && e.row.coll != VAULTS)
            .count();
        let inbox = self.subs[self.tracers[account]].inbox.clone();
        let arrived = eventually(Duration::from_secs(10), || {
            inbox.lock().unwrap_or_else(|e| e.into_inner()).events.len() >= n
        })
        .await;
        if arrived {
            let seq = cursor_of(&inbox.lock().unwrap_or_else(|e| e.into_inner()).events[n - 1]);
            if let Some(ev) = self.model.log.last_mut() {
                ev.seq = Some(seq);
            }
        }
    }

    /// After a quiet period, compares what each subscriber received with the model.
    async fn compare(&mut self, account_ids: &[String]) {
        let expected: Vec<Vec<String>> = self
            .subs
            .iter()
            .map(|sub| {
                let who = &self.who[sub.who];
                if sub.refused.is_some() {
                    return Vec::new();
                }
                self.model.log[sub.start..]
                    .iter()
                    .filter(|ev| self.model.delivers(who, &sub.sel, ev))
                    .map(|ev| self.model.key(who, &sub.sel, ev))
                    .collect()
            })
            .collect();
        for (sub, want) in self.subs.iter().zip(&expected) {
            eventually(Duration::from_secs(15), || {
                let inbox = sub.inbox.lock().unwrap_or_else(|e| e.into_inner());
                inbox.events.len() >= want.len()
                    && (sub.refused.is_none() || !inbox.errors.is_empty())
            })
            .await;
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        for (sub, want) in self.subs.iter().zip(expected) {
            sub.task.abort();
            let who = &self.who[sub.who];
            let inbox = sub.inbox.lock().unwrap_or_else(|e| e.into_inner());
            let got: Vec<String> = inbox
                .events
                .iter()
                .map(|v| self.received_key(who, &sub.sel, v, &account_ids[who.account]))
                .collect();
            self.tally.events += want.len();
            let mut problems = diff(&want, &got);
            let cursors: Vec<i64> = inbox.events.iter().map(cursor_of).collect();
            if cursors.windows(2).any(|p| p[0] >= p[1]) {
                problems.push(format!("cursors out of order: {cursors:?}"));
            }
            let errors_ok = match sub.refused {
                Some(code) => inbox.errors == [code],
                None => inbox.errors.is_empty() && inbox.ended.is_empty(),
            };
            if !errors_ok {
                problems.push(format!(
                    "errors {:?} (expected {:?}), ended {:?}",
                    inbox.errors, sub.refused, inbox.ended
                ));
            }
            if !problems.is_empty() {
                let seqs: Vec<String> = self.model.log[sub.start..]
                    .iter()
                    .filter(|ev| sub.refused.is_none() && self.model.delivers(who, &sub.sel, ev))
                    .map(|ev| format!("{:?}", ev.seq))
                    .collect();
                problems.push(format!("expected cursors {seqs:?}, received {cursors:?}"));
                self.tally.problems.push(format!(
                    "subscriber {} ({} resumes, from log index {}):\n    {}",
                    sub.label,
                    sub.resumes,
                    sub.start,
                    problems.join("\n    ")
                ));
            }
        }
    }

    /// The canonical form of a received event, comparable with [`Model::key`].
    fn received_key(&self, who: &Who, sel: &Sel, v: &Value, account_id: &str) -> String {
        let s = |v: &Value| {
            v.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string())
        };
        let coll = match sel {
            Sel::Changes { .. } => {
                return format!(
                    "hint {} {}",
                    s(&v["collection"]),
                    s(&v["action"]).to_uppercase()
                );
            }
            Sel::Changed { coll, .. } => *coll,
        };
        let c = &COLLS[coll];
        let r = &v["record"];
        let mut k = format!(
            "{} {} {} title={} published={}",
            c.key,
            s(&v["action"]),
            s(&v["id"]),
            s(&r["title"]),
            r["published"]
        );
        if r["id"] != v["id"] || r["accountId"] != account_id {
            k += &format!(" WRONG record {r}");
        }
        if let Some(row) = self.model.rows.get(&s(&v["id"]))
            && r["ownerId"].as_str() != row.owner.as_deref()
        {
            k += &format!(" WRONG owner {}", r["ownerId"]);
        }
        for (field, _) in c.refs {
            let id = r[format!("{field}Id")].as_str();
            let nested = &r[*field];
            let mut n = if nested.is_null() {
                "null"
            } else if nested["id"].as_str() == id && id.is_some() {
                "obj"
            } else {
                "bad"
            };
            if n != "bad" && self.model.nested(who, id) == "?" {
                n = "?";
            }
            k += &format!(" {field}={}:{n}", id.unwrap_or("-"));
        }
        k
    }
}

/// The cursor of a received event.
pub(super) fn cursor_of(v: &Value) -> i64 {
    v["cursor"]
        .as_str()
        .and_then(|c| c.parse().ok())
        .unwrap_or(-1)
}

/// Leaks, duplicates, missing events and order between `want` and `got`.
fn diff(want: &[String], got: &[String]) -> Vec<String> {
    let mut counts: HashMap<&str, (usize, usize)> = HashMap::new();
    for w in want {
        counts.entry(w).or_default().0 += 1;
    }
    for g in got {
        counts.entry(g).or_default().1 += 1;
    }
    let mut out = Vec::new();
    let mut keys: Vec<_> = counts.into_iter().collect();
    keys.sort();
    for (k, (w, g)) in keys {
        if w == 0 {
            out.push(format!("LEAK {k} (x{g})"));
        } else if g > w {
            out.push(format!("DUPLICATE {k} (x{g}, expected x{w})"));
        } else if g < w {
            out.push(format!("MISSING {k} (got x{g} of x{w})"));
        }
    }
    if out.is_empty() && want != got {
        out.push(format!("OUT OF ORDER: expected {want:?}, got {got:?}"));
    }
    out
}
