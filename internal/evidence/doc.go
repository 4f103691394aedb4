// Package evidence writes and verifies access review packs, the evidence an
// auditor accepts that the access list reviewed is complete and accurate
// ("information produced by the entity": where it came from, when, by which
// query, and that nothing was lost on the way), and renders review diffs.
//
// A pack is one folder:
//
//   - one CSV per population (load.Populations: users, role_grants,
//     invitations, privileged_access, ...), RFC 4180 with CRLF line ends,
//     UTF-8 without a byte order mark, times in ISO 8601 UTC; a text cell
//     that starts with = + - @ (or a tab or carriage return) gets a leading
//     apostrophe, so a spreadsheet never runs it as a formula;
//   - review_diff.csv, the changes since the previous review, when asked;
//   - access_review.xlsx, one sheet per population (the same cells), with
//     frozen headers and filters;
//   - summary.html, one self-contained page a reviewer reads first;
//   - manifest.json: the tool, the database, the point in time, the sync
//     that supplied each customer's data and whom it read the data as, the
//     gaps, for each file the exact SQL, its parameters, its row count and
//     its SHA-256, and the completeness checks with their results;
//   - manifest.sig, an Ed25519 signature of manifest.json's bytes, when a
//     signing key is configured.
//
// Every population is read in one read-only REPEATABLE READ transaction
// (load.ReadEvidence), so the files and the checks agree. Verify recomputes
// every hash and row count, refuses missing and extra files, and checks the
// signature.
package evidence
