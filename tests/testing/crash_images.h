#pragma once

// The images the image-mode crash test pulls: 12 images over 4 shared base layers, built the
// same way (deterministically) by the killed child and by the checking parent.

#include <string>
#include <vector>

#include "testing/txn_image.h"

namespace digestd::testing {

inline std::vector<BuiltImage> CrashImages() {
  std::vector<std::string> bases;
  for (int b = 0; b < 4; ++b) {
    bases.push_back(MakeTar({{"base/" + std::to_string(b), std::string(20000 + 5000 * b, 'A' + b)},
                             {"etc/base-id", "base " + std::to_string(b) + "\n"}}));
  }
  std::vector<BuiltImage> images;
  for (int i = 0; i < 12; ++i) {
    std::vector<std::string> tars = {bases[i % 4], bases[(i / 4 + 1) % 4]};
    if (tars[0] == tars[1]) tars.pop_back();
    std::string own(3000 + 700 * i, static_cast<char>('a' + i));
    if (i % 3 == 0) own += std::string(256u << 10, static_cast<char>('k' + i));  // bigger layers
    tars.push_back(MakeTar({{"app/id", "image " + std::to_string(i) + "\n"}, {"app/data", own}}));
    images.push_back(BuildImage("registry.test/crash" + std::to_string(i) + ":v1", tars));
  }
  return images;
}

}  // namespace digestd::testing
