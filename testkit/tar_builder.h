#pragma once

// Builds tar archives byte by byte (ustar headers, pax extended headers for long names and
// xattrs), so tests can make exactly the hostile layers real tools refuse to write. In testkit/
// (shared by tests and benchmarks, never part of the product: tests/boundaries_test.sh).

#include <zlib.h>
#include <zstd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace digestd::testing {

struct TarMeta {
  std::uint32_t mode = 0644;
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::int64_t mtime = 1700000000;
};

class TarBuilder {
 public:
  using Meta = TarMeta;

  TarBuilder& File(std::string_view path, std::string_view content, Meta m = {}) {
    return Entry(path, '0', content, "", m);
  }
  TarBuilder& Dir(std::string_view path, Meta m = {.mode = 0755}) {
    return Entry(path, '5', "", "", m);
  }
  TarBuilder& Symlink(std::string_view path, std::string_view target, Meta m = {.mode = 0777}) {
    return Entry(path, '2', "", target, m);
  }
  TarBuilder& Hardlink(std::string_view path, std::string_view target, Meta m = {}) {
    return Entry(path, '1', "", target, m);
  }
  TarBuilder& CharDev(std::string_view path, unsigned major, unsigned minor, Meta m = {}) {
    major_ = major;
    minor_ = minor;
    return Entry(path, '3', "", "", m);
  }
  TarBuilder& BlockDev(std::string_view path, unsigned major, unsigned minor, Meta m = {}) {
    major_ = major;
    minor_ = minor;
    return Entry(path, '4', "", "", m);
  }
  TarBuilder& Fifo(std::string_view path, Meta m = {}) { return Entry(path, '6', "", "", m); }
  // Pax records ("SCHILY.xattr.user.x" -> value, "path" -> name, ...) for the next entry only.
  TarBuilder& Pax(std::string key, std::string value) {
    pax_[std::move(key)] = std::move(value);
    return *this;
  }
  TarBuilder& Xattr(std::string name, std::string value) {
    return Pax("SCHILY.xattr." + name, std::move(value));
  }
  // A header claiming `size` bytes with no data after it (for truncation tests), then nothing.
  TarBuilder& Raw(std::string_view bytes) {
    out_.append(bytes);
    return *this;
  }

  // The archive with its two zero end blocks.
  std::string Finish() const { return out_ + std::string(1024, '\0'); }
  // Without the end blocks.
  const std::string& Unterminated() const { return out_; }

  // The 512-byte ustar header of a regular file of `size` bytes (for writers that stream the data
  // themselves, then pad it to 512 bytes).
  static std::string RegularHeader(std::string_view path, std::uint64_t size, Meta m = {}) {
    TarBuilder t;
    t.Header(path, '0', size, "", m);
    return t.out_;
  }

  static std::string Gzip(std::string_view in, int level = 1) {
    z_stream zs{};
    deflateInit2(&zs, level, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
    std::string out(deflateBound(&zs, in.size()) + 64, '\0');
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
    zs.avail_in = static_cast<uInt>(in.size());
    zs.next_out = reinterpret_cast<Bytef*>(out.data());
    zs.avail_out = static_cast<uInt>(out.size());
    deflate(&zs, Z_FINISH);
    out.resize(zs.total_out);
    deflateEnd(&zs);
    return out;
  }
  static std::string Zstd(std::string_view in) {
    std::string out(ZSTD_compressBound(in.size()), '\0');
    out.resize(ZSTD_compress(out.data(), out.size(), in.data(), in.size(), 1));
    return out;
  }

 private:
  static void Octal(char* field, std::size_t width, std::uint64_t v) {
    // width-1 octal digits, then NUL (values that do not fit are truncated: tests only).
    for (std::size_t i = width - 1; i-- > 0;) {
      field[i] = static_cast<char>('0' + (v & 7));
      v >>= 3;
    }
    field[width - 1] = '\0';
  }

  void Header(std::string_view name, char type, std::uint64_t size, std::string_view link,
              const Meta& m) {
    char h[512] = {};
    std::memcpy(h, name.data(), std::min<std::size_t>(name.size(), 100));
    Octal(h + 100, 8, m.mode);
    Octal(h + 108, 8, m.uid);
    Octal(h + 116, 8, m.gid);
    Octal(h + 124, 12, size);
    Octal(h + 136, 12, static_cast<std::uint64_t>(m.mtime));
    h[156] = type;
    std::memcpy(h + 157, link.data(), std::min<std::size_t>(link.size(), 100));
    std::memcpy(h + 257, "ustar\0" "00", 8);
    std::memcpy(h + 265, "root", 4);
    std::memcpy(h + 297, "root", 4);
    Octal(h + 329, 8, major_);
    Octal(h + 337, 8, minor_);
    std::memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (unsigned char c : h) sum += c;
    Octal(h + 148, 7, sum);
    h[155] = ' ';
    out_.append(h, 512);
  }

  void Data(std::string_view data) {
    out_.append(data);
    out_.append((512 - data.size() % 512) % 512, '\0');
  }

  static std::string PaxRecord(const std::string& key, const std::string& value) {
    // "<len> key=value\n" where len counts itself.
    const std::size_t body = key.size() + value.size() + 3;
    std::size_t len = body + 1;
    while (std::to_string(len).size() + body != len) ++len;
    return std::to_string(len) + " " + key + "=" + value + "\n";
  }

  TarBuilder& Entry(std::string_view path, char type, std::string_view content,
                    std::string_view link, const Meta& m) {
    if (path.size() > 100 || link.size() > 100) {
      if (path.size() > 100) pax_["path"] = std::string(path);
      if (link.size() > 100) pax_["linkpath"] = std::string(link);
    }
    if (!pax_.empty()) {
      std::string records;
      for (const auto& [k, v] : pax_) records += PaxRecord(k, v);
      Header("PaxHeaders/x", 'x', records.size(), "", Meta{});
      Data(records);
      pax_.clear();
    }
    Header(path, type, content.size(), link, m);
    Data(content);
    major_ = minor_ = 0;
    return *this;
  }

  std::string out_;
  std::map<std::string, std::string> pax_;
  unsigned major_ = 0;
  unsigned minor_ = 0;
};

}  // namespace digestd::testing
