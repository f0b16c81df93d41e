// The snapshotter's gRPC transport with a real gRPC client on its Unix socket: status codes that
// containerd's errdefs understand, streaming List, and peer credentials checked before gRPC sees
// the connection (a non-admin peer, run as uid 65534 in a child process, is refused).

#include <unistd.h>

#include <gtest/gtest.h>

#include <grpcpp/grpcpp.h>

#include <atomic>

#include "github.com/containerd/containerd/api/services/snapshots/v1/snapshots.grpc.pb.h"
#include "snapshotter/grpc_server.h"
#include "testing/store_image.h"
#include "testkit/tar_builder.h"
#include "testing/process_util.h"
#include "testing/test_util.h"
#include "verify/hasher.h"

namespace digestd::snapshotter {
namespace {

namespace pb = containerd::services::snapshots::v1;
using digestd::testing::TarBuilder;
using digestd::testing::TempDir;

class SnapshotterGrpcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = store::Store::Open({.root = dir_.path() / "store"});
    ASSERT_TRUE(s) << s.error().ToString();
    store_ = std::move(*s);
    const std::string tar = TarBuilder().File("hello", "hi\n").Finish();
    auto img = digestd::testing::PutImage(*store_, {tar});
    ASSERT_TRUE(img) << img.error().ToString();
    ASSERT_TRUE(store_->PutImageRecord(
        {.manifest = img->manifest, .image_manifest = img->manifest, .reference = "r/a:1"}));
    chain_ = verify::Hasher::Of(verify::DigestAlgorithm::kSha256, tar).ToString();
    auto snaps = Snapshots::Open(*store_, {.root = dir_.path() / "snaps", .mountpoint = "/mnt"});
    ASSERT_TRUE(snaps) << snaps.error().ToString();
    snaps_ = std::move(*snaps);
    ::chmod(dir_.path().c_str(), 0755);  // the uid-65534 child must reach the socket
    socket_ = (dir_.path() / "snap.sock").string();
    auto server = GrpcServer::Start(
        *snaps_, {.socket = socket_,
                  .mode = 0666,
                  .authorize = [](uid_t uid, gid_t) { return uid == 0; },
                  .on_refusal =
                      [this](const std::string& what) {
                        if (what.find("peer uid") != std::string::npos) refusals_.fetch_add(1);
                        else failures_.fetch_add(1);
                      }});
    ASSERT_TRUE(server) << server.error().ToString();
    server_ = std::move(*server);
  }
  std::unique_ptr<pb::Snapshots::Stub> Stub() {
    return pb::Snapshots::NewStub(
        grpc::CreateChannel("unix:" + socket_, grpc::InsecureChannelCredentials()));
  }
  static std::unique_ptr<grpc::ClientContext> Ctx() {
    auto c = std::make_unique<grpc::ClientContext>();
    c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return c;
  }

  TempDir dir_;
  store::StorePtr store_;
  std::unique_ptr<Snapshots> snaps_;
  std::unique_ptr<GrpcServer> server_;
  std::string socket_, chain_;
  std::atomic<int> refusals_{0};  // connections refused
  std::atomic<int> failures_{0};  // calls that failed (reported for the log and audit)
};

TEST_F(SnapshotterGrpcTest, ContainerdsCallsAndStatusCodes) {
  auto stub = Stub();
  pb::PrepareSnapshotRequest prep;
  prep.set_key("default/1/extract-1 " + chain_);
  (*prep.mutable_labels())["containerd.io/snapshot.ref"] = chain_;
  pb::PrepareSnapshotResponse prep_resp;
  EXPECT_EQ(stub->Prepare(Ctx().get(), prep, &prep_resp).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);
  pb::StatSnapshotRequest stat;
  stat.set_key(chain_);
  pb::StatSnapshotResponse stat_resp;
  ASSERT_TRUE(stub->Stat(Ctx().get(), stat, &stat_resp).ok());
  EXPECT_EQ(stat_resp.info().kind(), pb::COMMITTED);
  EXPECT_EQ(stat_resp.info().labels().at("containerd.io/snapshot.ref"), chain_);
  EXPECT_GT(stat_resp.info().created_at().seconds(), 0);
  stat.set_key("nope");
  EXPECT_EQ(stub->Stat(Ctx().get(), stat, &stat_resp).error_code(), grpc::StatusCode::NOT_FOUND);

  pb::PrepareSnapshotRequest ctr;
  ctr.set_key("default/2/c1");
  ctr.set_parent(chain_);
  ASSERT_TRUE(stub->Prepare(Ctx().get(), ctr, &prep_resp).ok());
  ASSERT_EQ(prep_resp.mounts_size(), 1);
  EXPECT_EQ(prep_resp.mounts(0).type(), "overlay");
  pb::MountsRequest mreq;
  mreq.set_key("default/2/c1");
  pb::MountsResponse mresp;
  ASSERT_TRUE(stub->Mounts(Ctx().get(), mreq, &mresp).ok());
  EXPECT_EQ(mresp.mounts(0).options(2), prep_resp.mounts(0).options(2));

  pb::CommitSnapshotRequest commit;
  commit.set_name("default/3/mine");
  commit.set_key("default/2/c1");
  google::protobuf::Empty empty;
  EXPECT_EQ(stub->Commit(Ctx().get(), commit, &empty).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  pb::PrepareSnapshotRequest unknown;
  unknown.set_key("default/4/extract-4 sha256:" + std::string(64, 'a'));
  (*unknown.mutable_labels())["containerd.io/snapshot.ref"] = "sha256:" + std::string(64, 'a');
  const grpc::Status refused = stub->Prepare(Ctx().get(), unknown, &prep_resp);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(refused.error_message().find("digestctl pull"), std::string::npos);

  pb::UpdateSnapshotRequest upd;
  upd.mutable_info()->set_name("default/2/c1");
  (*upd.mutable_info()->mutable_labels())["team"] = "a";
  upd.mutable_update_mask()->add_paths("labels.team");
  pb::UpdateSnapshotResponse upd_resp;
  ASSERT_TRUE(stub->Update(Ctx().get(), upd, &upd_resp).ok());
  EXPECT_EQ(upd_resp.info().labels().at("team"), "a");

  pb::ListSnapshotsRequest list;
  auto ctx = Ctx();
  auto reader = stub->List(ctx.get(), list);
  pb::ListSnapshotsResponse page;
  int n = 0;
  while (reader->Read(&page)) n += page.info_size();
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(n, 2);

  pb::UsageRequest ureq;
  ureq.set_key(chain_);
  pb::UsageResponse uresp;
  ASSERT_TRUE(stub->Usage(Ctx().get(), ureq, &uresp).ok());
  EXPECT_EQ(uresp.size(), 3);  // "hi\n"

  pb::RemoveSnapshotRequest rm;
  rm.set_key(chain_);
  EXPECT_EQ(stub->Remove(Ctx().get(), rm, &empty).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);  // it has a child
  rm.set_key("default/2/c1");
  EXPECT_TRUE(stub->Remove(Ctx().get(), rm, &empty).ok());
  pb::CleanupRequest cleanup;
  EXPECT_TRUE(stub->Cleanup(Ctx().get(), cleanup, &empty).ok());
  EXPECT_EQ(refusals_.load(), 0);
  EXPECT_EQ(failures_.load(), 3);  // commit, unknown chain, remove with a child
}

// Speaks the first bytes of HTTP/2 (client preface + an empty SETTINGS frame) on the socket as
// `who` and prints how many bytes came back before the peer closed or 3 s passed (a refused
// connection may already be closed while the client is still sending: that counts as 0).
std::string Http2Probe(const std::string& socket, const std::string& who) {
  const std::string py =
      "import socket,sys\n"
      "s=socket.socket(socket.AF_UNIX)\n"
      "s.settimeout(3)\n"
      "s.connect(sys.argv[1])\n"
      "try:\n"
      " s.sendall(b'PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n'+bytes([0,0,0,4,0,0,0,0,0]))\n"
      " d=s.recv(64)\n"
      "except Exception:\n"
      " d=b''\n"
      "print(len(d))\n";
  auto r = digestd::testing::Shell(who + " /usr/bin/python3 -c \"" + py + "\" " + socket);
  return r.output;
}

TEST_F(SnapshotterGrpcTest, NonAdminPeersAreRefusedBeforeGrpc) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to connect as another uid";
  // An admin peer gets gRPC's SETTINGS frame back.
  EXPECT_NE(Http2Probe(socket_, ""), "0\n");
  EXPECT_EQ(refusals_.load(), 0);
  // Any other peer is closed before gRPC reads a byte.
  EXPECT_EQ(Http2Probe(socket_, "setpriv --reuid=65534 --regid=65534 --clear-groups"), "0\n");
  EXPECT_EQ(refusals_.load(), 1);
}

}  // namespace
}  // namespace digestd::snapshotter
