// cri_pull SOCKET IMAGE: pulls IMAGE through containerd's CRI plugin (as kubelet does) and prints
// the image reference it resolved to. Exit 0 on success, 1 with the gRPC error otherwise.
#include <iostream>

#include <grpcpp/grpcpp.h>

#include "cri_pull.grpc.pb.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: cri_pull SOCKET IMAGE\n";
    return 2;
  }
  auto channel = grpc::CreateChannel(std::string("unix:") + argv[1],
                                     grpc::InsecureChannelCredentials());
  auto stub = runtime::v1::ImageService::NewStub(channel);
  runtime::v1::PullImageRequest req;
  req.mutable_image()->set_image(argv[2]);
  runtime::v1::PullImageResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  const grpc::Status st = stub->PullImage(&ctx, req, &resp);
  if (!st.ok()) {
    std::cerr << "PullImage: " << st.error_code() << " " << st.error_message() << "\n";
    return 1;
  }
  std::cout << resp.image_ref() << "\n";
  return 0;
}
