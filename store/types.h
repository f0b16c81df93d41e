#pragma once

// Value types of the store's public API. Plain structs; fields document their meaning.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "verify/digest.h"

namespace digestd::store {

using verify::Digest;

struct BlobInfo {
  Digest digest;
  std::uint64_t size = 0;
  std::string media_type;  // as recorded at ingest; empty when unknown (e.g. adopted at recovery)
  std::int64_t created = 0;    // unix seconds
  std::int64_t last_used = 0;  // unix seconds; updated by Touch() and SetRef()
  std::string tenant;          // tenant whose credentials pulled it; empty for shared pulls
};

struct BlobPage {
  std::vector<BlobInfo> items;
  std::optional<Digest> next;  // pass as `after` to get the next page; nullopt at the end
};

struct RefRecord {
  std::string reference;  // canonical reference text, e.g. "registry.example/ns/app:v1"
  Digest digest;          // manifest digest the reference resolved to
  std::int64_t resolved_at = 0;
};

struct Lease {
  std::string id;      // [A-Za-z0-9._-]{1,128}
  std::string tenant;  // [A-Za-z0-9._-]{1,128}
  // The container (OCI runtime id) the lease belongs to; empty: none. A release from an OCI
  // hook must name this container and this tenant, or it is refused.
  std::string container;  // [A-Za-z0-9._-]{1,128} or empty
  // Held only while the process that made it runs (a pull in flight): dropped by the next
  // Store::Open. Whether a lease is transient is this field, never a convention on its id.
  bool transient = false;
  std::vector<Digest> digests;  // pinned roots (manifests or blobs); closures are pinned too
  std::int64_t created = 0;
};

// Who asks for a lease's release on a container's behalf (Store::ReleaseLease).
struct LeaseOwner {
  std::string container;  // the OCI runtime's container id, from the container's state
  std::string tenant;     // optional: the tenant the container's annotations name
};

// Why an image is in the store: written by the pull once the image is committed.
struct ImageRecord {
  Digest manifest;        // what the reference resolved to (maybe an index); the record's key
  Digest image_manifest;  // the platform's image manifest
  std::string reference;  // as pulled
  std::string scope;      // the policy decision that admitted it
  std::string requirement;
  std::string signer;
  std::string reason;
  std::string tenant;
  std::int64_t actor_uid = -1;
  std::int64_t pulled_at = 0;
};

struct DenyRecord {
  Digest digest;
  std::string reason;
  std::int64_t created = 0;
};

struct AuditRecord {
  std::uint64_t seq = 0;
  std::string json;  // one JSON object
};

struct AuditStats {
  std::uint64_t events = 0;
  std::uint64_t bytes = 0;  // of the events' JSON text
};

struct AuditPruneReport {
  std::uint64_t removed = 0;
  std::uint64_t bytes_removed = 0;
  AuditStats after;
};

struct GcReport {
  bool dry_run = false;
  std::uint64_t live_blobs = 0;
  std::vector<BlobInfo> swept;  // removed (or, in a dry run, would be removed)
  std::uint64_t bytes_freed = 0;
  std::uint64_t files_swept = 0;  // unreferenced file objects removed
};

struct QuotaReport {
  // Usage::total(): blob bytes plus file object bytes.
  std::uint64_t usage_before = 0;
  std::uint64_t usage_after = 0;
  std::vector<Digest> evicted_images;  // manifest digests whose refs were dropped, oldest first
  std::uint64_t bytes_freed = 0;
};

struct WipeReport {
  std::string lease;
  std::string tenant;
  bool wiped = false;                  // false: the lease was only released
  std::vector<Digest> blobs;           // overwritten and unlinked
  std::uint64_t blob_bytes = 0;
  std::uint64_t files = 0;             // file objects overwritten and unlinked
  std::uint64_t file_bytes = 0;
  std::vector<std::string> refs_removed;
};

struct FsckProblem {
  std::string what;  // "digest-mismatch", "size-mismatch", "missing-file", "orphan", "bad-record",
                     // "bad-name", "bad-mode", "staging-leftover", "file-object-mismatch",
                     // "bad-tree", "tree-missing-file", "image-incomplete"
  std::string detail;
  bool repaired = false;
};

struct FsckReport {
  std::uint64_t blobs_checked = 0;
  std::uint64_t files_checked = 0;  // file objects re-hashed
  std::uint64_t trees_checked = 0;  // layer trees checked against their file objects
  std::uint64_t bytes_hashed = 0;
  std::vector<FsckProblem> problems;
  bool clean() const { return problems.empty(); }
};

struct ScrubOptions {
  // Stop after hashing about this many bytes (0: to the end of the pass).
  std::uint64_t max_bytes = 0;
  // Hashing rate bound in bytes per second (0: unbounded). Default 64 MiB/s.
  std::uint64_t rate_bytes_per_s = std::uint64_t{64} << 20;
  // Remove what is found damaged: a blob with its tree, a file object with every layer using it
  // (their images are then pulled again whole).
  bool repair = false;
  // Start a new pass from the first blob instead of resuming.
  bool restart = false;
};

struct ScrubReport {
  std::uint64_t blobs_checked = 0;
  std::uint64_t files_checked = 0;
  std::uint64_t bytes_hashed = 0;
  bool pass_complete = false;  // this call reached the end of a pass (the next starts over)
  std::string resume_at;       // where the next call starts ("" at the start of a pass)
  std::vector<FsckProblem> problems;
};

struct RecoveryReport {
  std::uint64_t staging_removed = 0;
  // Blob files without a record: staged by an image transaction that never committed (a kill
  // between staging and commit). Removed, never adopted: an adopted manifest would lack its media
  // type, tenant and edges.
  std::uint64_t uncommitted_removed = 0;
  std::uint64_t orphans_removed = 0;   // bad names and entries that are not regular files
  std::uint64_t records_dropped = 0;   // records whose file was missing or unreadable
  std::uint64_t bad_records = 0;       // records that failed to parse
  std::uint64_t files_removed = 0;     // file objects no layer tree referenced
  std::uint64_t leases_dropped = 0;    // transient leases of a process that is gone
  // Blobs whose record could not be read and file objects cut short: moved to quarantine/.
  std::uint64_t quarantined = 0;
  // The previous process recorded a clean stop (Store::MarkCleanShutdown): the walks of blobs/
  // and files/ that repair what a crash leaves were skipped, and usage came from the record.
  bool after_clean_stop = false;
  // Images (their references) that lack a blob, a tree or a file object after recovery: not
  // served whole; pulling them again restores them.
  std::vector<std::string> images_broken;
};

struct Usage {
  std::uint64_t blobs = 0;
  std::uint64_t bytes = 0;       // of blobs (compressed layers, manifests, configs)
  std::uint64_t files = 0;       // unpacked file objects
  std::uint64_t file_bytes = 0;  // of file objects
  // What the quota counts: everything stored.
  std::uint64_t total() const { return bytes + file_bytes; }
};

// Monotonic counters, for metrics. Read with relaxed ordering.
// What an inode range numbers (Store::InodesFor). The mount lays out each kind itself
// (fusefs/namespace.cc); kInodeLayout names that layout and is bumped whenever it changes, so a
// new build never reads an old range with another meaning.
enum class InodeKind : std::uint8_t {
  kLayer = 1,  // a layer's tree: one number per tree entry
  kImage = 2,  // images/<m>/ and its lowerdir file, then one number per entry of all its layers
  kBlob = 3,   // blobs/sha256/<hex>
};
inline constexpr std::uint32_t kInodeLayout = 1;
// The first number Store::InodesFor hands out: the mount's fixed directories use those below.
inline constexpr std::uint64_t kFirstRangeIno = 16;

struct InodeRange {
  InodeKind kind = InodeKind::kLayer;
  Digest digest;  // no default: always built with its fields
  std::uint64_t first = 0;
  std::uint64_t count = 0;
};

struct StoreCounters {
  std::uint64_t corrupt_records = 0;
  std::uint64_t digest_mismatches = 0;
  std::uint64_t size_mismatches = 0;
  std::uint64_t commits = 0;
  std::uint64_t aborts = 0;
  std::uint64_t scrub_bytes = 0;     // hashed by Scrub()
  std::uint64_t scrub_problems = 0;  // damaged blobs and file objects Scrub() found
  std::uint64_t scrub_passes = 0;    // passes Scrub() completed
  std::uint64_t index_write_failures = 0;  // index writes that failed (I/O errors)
  std::uint64_t audit_write_failures = 0;  // audit events that could not be written
};

}  // namespace digestd::store
