#pragma once

// Index encoding of layer trees (internal to store/).
//   trees   "<layer digest>"            -> JSON TreeInfo {"v":1,"diff_id":..,"entries":..,..}
//   entries "<layer digest>/<path>"     -> binary entry record (below), one per path
//   filerefs "<content digest> <layer digest>" -> ""   which layers use a file object
// The entry record is little-endian: u8 version(1), u8 type, u32 mode, u32 uid, u32 gid,
// i64 mtime, u64 size, u32 link_group, u32 rdev major, u32 rdev minor, u8 flags (1 opaque,
// 2 implicit), then per type: regular: 64 hex chars of the sha256 content digest; symlink: u32
// length + target; then u32 xattr count and for each u32 name length, name, u32 value length,
// value. Decoding is strict: every field is range-checked and the record must be consumed exactly.

#include <string>
#include <string_view>

#include "common/error.h"
#include "store/tree.h"

namespace digestd::store {

inline constexpr std::uint8_t kEntryRecordVersion = 1;

std::string EntryKeyPrefix(const verify::Digest& layer);  // "<layer digest>/"
std::string EncodeEntry(const TreeEntry& e);
// `path` comes from the key (after the prefix) and is validated too.
Result<TreeEntry> DecodeEntry(std::string_view path, std::string_view value);

std::string EncodeTreeInfo(const TreeInfo& info);
Result<TreeInfo> DecodeTreeInfo(std::string_view key, std::string_view value);

}  // namespace digestd::store
