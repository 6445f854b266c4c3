//! The members table's rows and the "New owner" choices, written as HTML text.
//!
//! Why not `view!`: these rows are most of the members page (20 rows × ≈ 14 elements),
//! and tachys renders each element through several small strings and owned attribute
//! values. Written here into one pre-sized buffer, the page costs the server ≈ 12 % fewer
//! instructions (docs/benchmarks.md, "What keeps the members page cheap"). The page sets the text with `inner_html`
//! in the server render and in the browser alike, so hydration has nothing to walk in
//! it; the row forms' submits are handled by one listener on the table
//! (`pages::MembersSettingsPage`).
//!
//! Every value from the database goes through [`push_text`], which escapes all of
//! `& < > " '`, so a name cannot close an attribute or open a tag (tests below).

use super::api::MemberView;

/// What the rows depend on besides the members themselves.
pub struct RowOptions<'a> {
    pub slug: &'a str,
    /// Whether the caller may manage members at all (adds the "Actions" column).
    pub can_manage: bool,
    /// Whether "owner" may be chosen (only owners grant ownership).
    pub owner_choices: bool,
    /// `ChangeMemberRole::url()` and `RemoveMember::url()`.
    pub change_url: &'a str,
    pub remove_url: &'a str,
}

/// Escapes `text` for use in element content and in double-quoted attribute values.
pub fn push_text(buf: &mut String, text: &str) {
    // Most names and addresses have nothing to escape: one scan, then a plain copy.
    if text.bytes().any(|b| matches!(b, b'&' | b'<' | b'>' | b'"' | b'\'')) {
        html_escape::encode_quoted_attribute_to_string(text, buf);
    } else {
        buf.push_str(text);
    }
}

/// The `<tr>` elements of the members table.
pub fn member_rows_html(members: &[MemberView], options: &RowOptions<'_>) -> String {
    // ≈ 620 bytes per managed row; one allocation for the whole table in the usual case.
    let mut buf = String::with_capacity(64 + members.len() * 640);
    let choices: &[&str] =
        if options.owner_choices { &["owner", "admin", "member", "viewer"] } else { &["admin", "member", "viewer"] };
    for m in members {
        buf.push_str("<tr aria-label=\"");
        push_text(&mut buf, &m.display_name);
        buf.push_str("\"><td>");
        push_text(&mut buf, &m.display_name);
        if m.is_me {
            buf.push_str(" (you)");
        }
        buf.push_str("</td><td>");
        push_text(&mut buf, &m.email);
        buf.push_str("</td><td>");
        push_text(&mut buf, &m.role);
        buf.push_str("</td>");
        if options.can_manage {
            buf.push_str("<td>");
            if m.manageable {
                push_member_controls(&mut buf, m, choices, options);
            }
            buf.push_str("</td>");
        }
        buf.push_str("</tr>");
    }
    buf
}

/// Role change and removal of one member in one form: "Change role" posts to the form's
/// action, "Remove" to its own `formaction`. Without JavaScript the browser posts to the
/// pressed button's endpoint; with it, the table's submit listener dispatches the action.
fn push_member_controls(buf: &mut String, m: &MemberView, choices: &[&str], options: &RowOptions<'_>) {
    // The URLs are our own constants, written as they are.
    buf.push_str("<form action=\"");
    buf.push_str(options.change_url);
    buf.push_str("\" method=\"post\" class=\"row-controls\"><input type=\"hidden\" name=\"slug\" value=\"");
    push_text(buf, options.slug);
    buf.push_str("\"><input type=\"hidden\" name=\"user_id\" value=\"");
    push_text(buf, &m.user_id);
    // Named by aria-label (no separate <label>/id pair): the form repeats on every row.
    buf.push_str("\"><select name=\"role\" aria-label=\"Role for ");
    push_text(buf, &m.display_name);
    buf.push_str("\">");
    for &choice in choices {
        buf.push_str("<option value=\"");
        buf.push_str(choice);
        buf.push('"');
        if choice == m.role {
            buf.push_str(" selected");
        }
        buf.push('>');
        buf.push_str(choice);
        buf.push_str("</option>");
    }
    buf.push_str("</select><button type=\"submit\">Change role</button><button type=\"submit\" formaction=\"");
    buf.push_str(options.remove_url);
    buf.push_str("\">Remove</button></form>");
}

/// The `<option>` elements of the "New owner" choice: every member but the caller.
pub fn owner_candidates_html(members: &[MemberView]) -> String {
    let mut buf = String::with_capacity(members.len() * 72);
    for m in members.iter().filter(|m| !m.is_me) {
        buf.push_str("<option value=\"");
        push_text(&mut buf, &m.user_id);
        buf.push_str("\">");
        push_text(&mut buf, &m.display_name);
        buf.push_str("</option>");
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, role: &str, is_me: bool, manageable: bool) -> MemberView {
        MemberView {
            user_id: format!("id-{name}"),
            display_name: name.into(),
            email: format!("{}@example.test", name.to_lowercase().replace(' ', ".")),
            role: role.into(),
            is_me,
            manageable,
        }
    }

    fn options(can_manage: bool, owner_choices: bool) -> RowOptions<'static> {
        RowOptions {
            slug: "team",
            can_manage,
            owner_choices,
            change_url: "/api/change_member_role",
            remove_url: "/api/remove_member",
        }
    }

    #[test]
    fn a_managed_row_has_the_role_form_with_the_current_role_selected() {
        let html = member_rows_html(&[member("Ann Lee", "member", false, true)], &options(true, false));
        assert_eq!(
            html,
            "<tr aria-label=\"Ann Lee\"><td>Ann Lee</td><td>ann.lee@example.test</td><td>member</td><td>\
             <form action=\"/api/change_member_role\" method=\"post\" class=\"row-controls\">\
             <input type=\"hidden\" name=\"slug\" value=\"team\"><input type=\"hidden\" name=\"user_id\" value=\"id-Ann Lee\">\
             <select name=\"role\" aria-label=\"Role for Ann Lee\"><option value=\"admin\">admin</option>\
             <option value=\"member\" selected>member</option><option value=\"viewer\">viewer</option></select>\
             <button type=\"submit\">Change role</button>\
             <button type=\"submit\" formaction=\"/api/remove_member\">Remove</button></form></td></tr>"
        );
    }

    #[test]
    fn only_owners_are_offered_the_owner_role() {
        let row = [member("Ann", "viewer", false, true)];
        assert!(member_rows_html(&row, &options(true, true)).contains("<option value=\"owner\">owner</option>"));
        assert!(!member_rows_html(&row, &options(true, false)).contains("owner"));
    }

    #[test]
    fn rows_the_caller_cannot_manage_have_no_controls() {
        let html = member_rows_html(
            &[member("Me", "owner", true, false), member("Boss", "owner", false, false)],
            &options(true, false),
        );
        assert!(html.contains("<td>Me (you)</td>"));
        assert!(!html.contains("<form"), "{html}");
        assert_eq!(html.matches("<td></td>").count(), 2, "{html}");
        // Without the right to manage, there is no Actions column at all.
        let html = member_rows_html(&[member("Ann", "member", false, false)], &options(false, false));
        assert_eq!(html.matches("<td>").count(), 3, "{html}");
    }

    #[test]
    fn names_and_emails_cannot_break_out_of_text_or_attributes() {
        let evil = MemberView {
            user_id: "\"><script>alert(1)</script>".into(),
            display_name: "Eve\" onmouseover=\"alert(1)' <img src=x onerror=alert(2)> & co".into(),
            email: "</td><script>alert(3)</script>@example.test".into(),
            role: "member".into(),
            is_me: false,
            manageable: true,
        };
        let plain = MemberView {
            user_id: "u".into(),
            display_name: "n".into(),
            email: "e".into(),
            role: "member".into(),
            is_me: false,
            manageable: true,
        };
        let render = |m: &MemberView| {
            [
                member_rows_html(std::slice::from_ref(m), &options(true, true)),
                owner_candidates_html(std::slice::from_ref(m)),
            ]
        };
        // Same markup as for harmless values: as many tags, quotes and apostrophes.
        for (html, plain_html) in render(&evil).into_iter().zip(render(&plain)) {
            for c in ['<', '>', '"', '\''] {
                assert_eq!(html.matches(c).count(), plain_html.matches(c).count(), "{c} in {html}");
            }
            assert!(
                html.contains("Eve&quot; onmouseover=&quot;alert(1)&#x27; &lt;img src=x onerror=alert(2)&gt; &amp; co"),
                "{html}"
            );
        }
    }

    #[test]
    fn owner_candidates_are_everyone_but_the_caller() {
        let html = owner_candidates_html(&[member("Me", "owner", true, false), member("Bo", "admin", false, true)]);
        assert_eq!(html, "<option value=\"id-Bo\">Bo</option>");
    }
}
