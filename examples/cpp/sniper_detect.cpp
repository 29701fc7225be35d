// sniper_detect: runs a detector package of `sniper export` (an AOTInductor .pt2) on an image,
// without Python, and prints its detections.
//
//   sniper_detect MODEL.pt2 IMAGE.ppm [--score-threshold S]
//
// The image is a binary PPM (P6, 8-bit RGB); convert others with e.g.
//   python -c "from PIL import Image; Image.open('in.jpg').convert('RGB').save('in.ppm')"
// It is prepared as sniper_ext.export.prepare_image does in Python: resized to each of the
// package's resolutions (scale = min/min(W, H), lowered to max/max(W, H); size rounded half to
// even; torch's antialiased bilinear resize, rounded), padded with the training mean colour to a
// multiple of the size divisibility. Output: a header line, then one tab-separated line per
// detection by score (category_id, name, score, x1, y1, x2, y2 in original pixels), the format
// of sniper_ext.export.format_detections, so the two can be compared line by line.
//
// Linked with the sniper ops library (CMake target sniper::ops), whose kernels the package's
// graph calls (torch.ops.sniper.*): the library registers them when it is loaded.
#include <ATen/ATen.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

struct Image {
  int64_t width = 0, height = 0;
  std::vector<uint8_t> rgb;  // height x width x 3
};

// The next header token of a PPM file (skips whitespace and # comments).
std::string ppm_token(std::istream& in, const std::string& path) {
  std::string tok;
  while (in) {
    const int c = in.get();
    if (c == '#') {
      std::string line;
      std::getline(in, line);
    } else if (std::isspace(c)) {
      if (!tok.empty()) return tok;
    } else if (c != EOF) {
      tok.push_back(static_cast<char>(c));
    }
  }
  if (tok.empty()) throw std::runtime_error(path + ": truncated PPM header");
  return tok;
}

Image read_ppm(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open");
  if (ppm_token(in, path) != "P6") throw std::runtime_error(path + ": not a binary PPM (P6) image");
  Image im;
  try {
    im.width = std::stoll(ppm_token(in, path));
    im.height = std::stoll(ppm_token(in, path));
    if (std::stoi(ppm_token(in, path)) != 255) throw std::runtime_error("");
  } catch (const std::exception&) {
    throw std::runtime_error(path + ": bad PPM header (need P6, width, height, maxval 255)");
  }
  if (im.width < 1 || im.height < 1 || im.width > 65536 || im.height > 65536) {
    throw std::runtime_error(path + ": image size out of range");
  }
  im.rgb.resize(static_cast<size_t>(im.width * im.height * 3));
  in.read(reinterpret_cast<char*>(im.rgb.data()), static_cast<std::streamsize>(im.rgb.size()));
  if (in.gcount() != static_cast<std::streamsize>(im.rgb.size())) throw std::runtime_error(path + ": truncated pixels");
  return im;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string part;
  while (std::getline(ss, part, sep)) out.push_back(part);
  return out;
}

struct PackageInfo {
  std::vector<std::pair<int64_t, int64_t>> resolutions;
  int64_t divisibility = 16;
  uint8_t pad[3] = {0, 0, 0};
  std::vector<std::string> category_ids, names;
};

PackageInfo read_info(std::unordered_map<std::string, std::string> meta, const std::string& path) {
  const char* need[] = {"sniper.format",  "sniper.resolutions",  "sniper.size_divisibility",
                        "sniper.pad_rgb", "sniper.category_ids", "sniper.category_names"};
  for (const char* key : need) {
    if (!meta.count(key)) throw std::runtime_error(path + ": not a package of `sniper export` (no " + key + ")");
  }
  if (meta["sniper.format"] != "1") throw std::runtime_error(path + ": package format " + meta["sniper.format"]);
  PackageInfo info;
  for (const auto& r : split(meta["sniper.resolutions"], ';')) {
    const auto x = r.find('x');
    info.resolutions.emplace_back(std::stoll(r.substr(0, x)), std::stoll(r.substr(x + 1)));
  }
  info.divisibility = std::stoll(meta["sniper.size_divisibility"]);
  const auto pad = split(meta["sniper.pad_rgb"], ',');
  for (int c = 0; c < 3; ++c) info.pad[c] = static_cast<uint8_t>(std::stoi(pad.at(c)));
  info.category_ids = split(meta["sniper.category_ids"], ',');
  info.names = split(meta["sniper.category_names"], '\n');
  return info;
}

// sniper_ext.chips.resolution_scale, in the same double arithmetic.
double resolution_scale(double width, double height, double lo, double hi) {
  double s = lo / std::min(width, height);
  if (std::max(width, height) * s > hi) s = hi / std::max(width, height);
  return s;
}

// sniper_ext.export.resize_image: the same ATen kernel (antialiased bilinear), rounded.
at::Tensor resize(const at::Tensor& image, int64_t width, int64_t height) {
  if (image.size(2) == width && image.size(1) == height) return image.clone();
  at::Tensor x = at::_upsample_bilinear2d_aa(image.unsqueeze(0).to(at::kFloat), {height, width}, false);
  return x.squeeze(0).round().clamp(0, 255).to(at::kByte);
}

// sniper_ext.export.prepare_image: the program's inputs for one image.
std::vector<at::Tensor> prepare(const Image& im, const PackageInfo& info) {
  at::Tensor image = at::from_blob(const_cast<uint8_t*>(im.rgb.data()), {im.height, im.width, 3}, at::kByte)
                         .permute({2, 0, 1})
                         .contiguous();
  std::vector<at::Tensor> inputs;
  inputs.push_back(at::tensor({static_cast<float>(im.width), static_cast<float>(im.height)}).view({1, 2}));
  const at::Tensor pad =
      at::tensor({int64_t(info.pad[0]), int64_t(info.pad[1]), int64_t(info.pad[2])}).to(at::kByte).view({3, 1, 1});
  const int64_t d = info.divisibility;
  for (const auto& [lo, hi] : info.resolutions) {
    const double s = resolution_scale(double(im.width), double(im.height), double(lo), double(hi));
    // Python's round(): half to even, as nearbyint in the default rounding mode
    const int64_t w = std::max<int64_t>(1, static_cast<int64_t>(std::nearbyint(double(im.width) * s)));
    const int64_t h = std::max<int64_t>(1, static_cast<int64_t>(std::nearbyint(double(im.height) * s)));
    const int64_t hp = (h + d - 1) / d * d, wp = (w + d - 1) / d * d;
    at::Tensor batch = pad.expand({3, hp, wp}).clone();
    batch.narrow(1, 0, h).narrow(2, 0, w).copy_(resize(image, w, h));
    inputs.push_back(batch.unsqueeze(0));
    inputs.push_back(at::tensor({static_cast<float>(w), static_cast<float>(h)}).view({1, 2}));
    inputs.push_back(at::tensor({static_cast<float>(s)}));
  }
  return inputs;
}

int usage() {
  std::cerr << "usage: sniper_detect MODEL.pt2 IMAGE.ppm [--score-threshold S]\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 && argc != 5) return usage();
  double threshold = 0.0;
  if (argc == 5) {
    if (std::string(argv[3]) != "--score-threshold") return usage();
    char* end = nullptr;
    threshold = std::strtod(argv[4], &end);
    if (end == argv[4] || *end != '\0' || !(threshold >= 0.0 && threshold <= 1.0)) {
      std::cerr << "sniper_detect: --score-threshold must be a number in [0, 1], got " << argv[4] << "\n";
      return 2;
    }
  }
  const std::string package = argv[1], image_path = argv[2];
  try {
    const Image im = read_ppm(image_path);
    torch::inductor::AOTIModelPackageLoader loader(package);
    const PackageInfo info = read_info(loader.get_metadata(), package);
    std::vector<at::Tensor> inputs = prepare(im, info);
    const auto meta = loader.get_metadata();
    const auto device = meta.find("sniper.device");
    if (device != meta.end() && device->second == "cuda") {  // a package compiled for the GPU
      for (at::Tensor& t : inputs) t = t.to(at::kCUDA);
    }
    const std::vector<at::Tensor> out = loader.run(inputs);
    const at::Tensor boxes = out.at(0).cpu().contiguous(), scores = out.at(1).cpu().contiguous();
    const at::Tensor labels = out.at(2).cpu().contiguous();
    const int64_t count = out.at(3).cpu().item<int64_t>();
    const float* b = boxes.data_ptr<float>();
    const float* s = scores.data_ptr<float>();
    const int64_t* l = labels.data_ptr<int64_t>();
    int64_t shown = 0;
    for (int64_t i = 0; i < count; ++i) shown += s[i] >= threshold;
    std::printf("# %s: %lldx%lld, %lld detections (%lld scoring >= %g)\n", image_path.c_str(),
                static_cast<long long>(im.width), static_cast<long long>(im.height), static_cast<long long>(count),
                static_cast<long long>(shown), threshold);
    for (int64_t i = 0; i < count; ++i) {
      if (!(s[i] >= threshold)) continue;
      const size_t k = static_cast<size_t>(l[i] - 1);
      const std::string id = k < info.category_ids.size() ? info.category_ids[k] : std::to_string(l[i]);
      const std::string name = k < info.names.size() ? info.names[k] : id;
      std::printf("%s\t%s\t%.9g\t%.9g\t%.9g\t%.9g\t%.9g\n", id.c_str(), name.c_str(), s[i], b[4 * i], b[4 * i + 1],
                  b[4 * i + 2], b[4 * i + 3]);
    }
  } catch (const std::exception& e) {
    std::cerr << "sniper_detect: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
