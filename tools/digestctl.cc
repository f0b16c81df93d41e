// digestctl: the operator's tool. Offline commands open a store directly (the daemon must not be
// running on it: the store lock refuses a second opener). Exit codes: 0 ok / clean, 1 problems
// found, 2 bad input or failure to run.

#include <cstdio>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "store/store.h"

namespace {

using digestd::store::FsckReport;
using digestd::store::Store;
using digestd::store::StoreOptions;

int RunFsck(const std::string& root, bool repair, bool json) {
  auto store = Store::Open(StoreOptions{.root = root, .create = false});
  if (!store) {
    std::cerr << "digestctl fsck: " << store.error().ToString() << "\n";
    return 2;
  }
  auto report = (*store)->Fsck(repair);
  if (!report) {
    std::cerr << "digestctl fsck: " << report.error().ToString() << "\n";
    return 2;
  }
  const auto& rr = (*store)->recovery();
  if (json) {
    nlohmann::json j = {{"blobs_checked", report->blobs_checked},
                        {"bytes_hashed", report->bytes_hashed},
                        {"clean", report->clean()},
                        {"recovery",
                         {{"staging_removed", rr.staging_removed},
                          {"orphans_adopted", rr.orphans_adopted},
                          {"orphans_removed", rr.orphans_removed},
                          {"records_dropped", rr.records_dropped},
                          {"bad_records", rr.bad_records}}},
                        {"problems", nlohmann::json::array()}};
    for (const auto& p : report->problems) {
      j["problems"].push_back({{"what", p.what}, {"detail", p.detail}, {"repaired", p.repaired}});
    }
    std::cout << j.dump(2) << "\n";
  } else {
    std::printf("recovery at open: staging_removed=%llu orphans_adopted=%llu orphans_removed=%llu "
                "records_dropped=%llu bad_records=%llu\n",
                static_cast<unsigned long long>(rr.staging_removed),
                static_cast<unsigned long long>(rr.orphans_adopted),
                static_cast<unsigned long long>(rr.orphans_removed),
                static_cast<unsigned long long>(rr.records_dropped),
                static_cast<unsigned long long>(rr.bad_records));
    for (const auto& p : report->problems) {
      std::printf("%-18s %s%s\n", p.what.c_str(), p.detail.c_str(),
                  p.repaired ? " [repaired]" : "");
    }
    std::printf("checked %llu blobs, hashed %llu bytes: %s\n",
                static_cast<unsigned long long>(report->blobs_checked),
                static_cast<unsigned long long>(report->bytes_hashed),
                report->clean() ? "clean" : (repair ? "problems repaired" : "PROBLEMS FOUND"));
  }
  return report->clean() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"digestctl: inspect and operate a digestd host"};
  app.require_subcommand(1);
  bool json = false;
  app.add_flag("--json", json, "machine-readable output");

  std::string root;
  bool repair = false;
  auto* fsck = app.add_subcommand("fsck", "re-hash every blob of a store (offline)");
  fsck->add_option("--root", root, "store root")->required();
  fsck->add_flag("--repair", repair, "remove what is corrupt, adopt valid orphans");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  if (*fsck) return RunFsck(root, repair, json);
  return 2;
}
