// float32 tensors in .npy files (format versions 1.0, 2.0 and 3.0, little-endian, C order) and
// raw little-endian float32 files with a shape given by the caller. Header only, no TVM.
//
// Every failure throws NpyError with a message that names the file and says what was expected
// and what was found. Writes go to a temporary file next to the target that is renamed into
// place only once complete, so a failed run never leaves a partial output behind.
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>

namespace qmtg {

struct NpyError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Float32Array {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

inline std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

inline bool host_is_little_endian() {
  const uint16_t one = 1;
  unsigned char first;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

namespace detail {

inline std::vector<char> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw NpyError(path + ": cannot open (" + std::strerror(errno) + ")");
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw NpyError(path + ": read error");
  return bytes;
}

// Element count of a shape, refusing negative sizes and overflow of the byte length.
inline uint64_t element_count(const std::string& path, const std::vector<int64_t>& shape) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw NpyError(path + ": negative dimension in shape " + shape_str(shape));
    if (d != 0 && n > (UINT64_MAX / 4) / static_cast<uint64_t>(d))
      throw NpyError(path + ": shape " + shape_str(shape) + " is too large");
    n *= static_cast<uint64_t>(d);
  }
  return n;
}

// Text from a file as one line of a message: control and non-ASCII bytes escaped, long text cut.
inline std::string printable(const std::string& text) {
  std::string out;
  for (unsigned char c : text.substr(0, 200)) {
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char hex[5];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    }
  }
  return text.size() > 200 ? out + "..." : out;
}

inline std::string describe_descr(const std::string& d) {
  static const char* names[][2] = {{"<f4", "float32"}, {">f4", "big-endian float32"}, {"<f8", "float64"},
                                   {"<f2", "float16"}, {"|u1", "uint8"},  {"|i1", "int8"},
                                   {"<u2", "uint16"},  {"<i2", "int16"},  {"<i4", "int32"},
                                   {"<i8", "int64"},   {"|b1", "bool"}};
  for (auto& n : names)
    if (d == n[0]) return "'" + d + "' (" + n[1] + ")";
  return "'" + printable(d) + "'";
}

// The header is a Python dict literal, e.g.
//   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 32, 32, 12), }
// This parser accepts exactly the literal forms numpy writes (strings, True/False, int tuples).
class HeaderParser {
 public:
  HeaderParser(const std::string& path, const std::string& text) : path_(path), s_(text) {}

  void parse(std::string* descr, bool* fortran, std::vector<int64_t>* shape) {
    bool have_descr = false, have_order = false, have_shape = false;
    expect('{');
    while (true) {
      skip_ws();
      if (peek() == '}') break;
      std::string key = string_literal();
      expect(':');
      if (key == "descr") {
        *descr = string_literal();
        have_descr = true;
      } else if (key == "fortran_order") {
        *fortran = boolean();
        have_order = true;
      } else if (key == "shape") {
        *shape = int_tuple();
        have_shape = true;
      } else {
        fail("unexpected key '" + key + "'");
      }
      skip_ws();
      if (peek() == ',') ++i_;
    }
    if (!have_descr || !have_order || !have_shape)
      fail("the header must have the keys 'descr', 'fortran_order' and 'shape'");
  }

 private:
  [[noreturn]] void fail(const std::string& what) {
    throw NpyError(path_ + ": not a valid .npy header (" + what + "): " + printable(s_));
  }
  void skip_ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n')) ++i_;
  }
  char peek() {
    if (i_ >= s_.size()) fail("unexpected end");
    return s_[i_];
  }
  void expect(char c) {
    skip_ws();
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++i_;
  }
  std::string string_literal() {
    skip_ws();
    char q = peek();
    if (q != '\'' && q != '"') fail("expected a string");
    size_t end = s_.find(q, i_ + 1);
    if (end == std::string::npos) fail("unterminated string");
    std::string out = s_.substr(i_ + 1, end - i_ - 1);
    i_ = end + 1;
    return out;
  }
  bool boolean() {
    skip_ws();
    if (s_.compare(i_, 4, "True") == 0) return i_ += 4, true;
    if (s_.compare(i_, 5, "False") == 0) return i_ += 5, false;
    fail("expected True or False");
  }
  std::vector<int64_t> int_tuple() {
    std::vector<int64_t> out;
    expect('(');
    while (true) {
      skip_ws();
      if (peek() == ')') break;
      size_t start = i_;
      while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
      if (i_ == start || i_ - start > 18) fail("expected a dimension");
      out.push_back(std::stoll(s_.substr(start, i_ - start)));
      skip_ws();
      if (peek() == ',') ++i_;
      else if (peek() != ')') fail("expected ',' or ')'");
    }
    ++i_;
    return out;
  }

  const std::string& path_;
  const std::string& s_;
  size_t i_ = 0;
};

}  // namespace detail

// Reads a float32 .npy file ('<f4', C order). The data length must match the header's shape.
inline Float32Array read_npy_f32(const std::string& path) {
  std::vector<char> bytes = detail::read_file(path);
  static const char magic[] = "\x93NUMPY";
  if (bytes.size() < 10 || std::memcmp(bytes.data(), magic, 6) != 0)
    throw NpyError(path + ": not a .npy file (no \\x93NUMPY magic at the start)");
  const auto* u = reinterpret_cast<const unsigned char*>(bytes.data());
  const int major = u[6], minor = u[7];
  size_t header_len, offset;
  if (major == 1 && minor == 0) {
    header_len = u[8] | (u[9] << 8);
    offset = 10;
  } else if ((major == 2 || major == 3) && minor == 0) {
    if (bytes.size() < 12) throw NpyError(path + ": truncated .npy header");
    header_len = u[8] | (u[9] << 8) | (static_cast<size_t>(u[10]) << 16) | (static_cast<size_t>(u[11]) << 24);
    offset = 12;
  } else {
    throw NpyError(path + ": unsupported .npy format version " + std::to_string(major) + "." +
                   std::to_string(minor) + " (expected 1.0, 2.0 or 3.0)");
  }
  if (bytes.size() < offset + header_len)
    throw NpyError(path + ": truncated .npy header (" + std::to_string(header_len) + " bytes announced, " +
                   std::to_string(bytes.size() - offset) + " present)");
  std::string header(bytes.data() + offset, header_len);
  while (!header.empty() && (header.back() == '\n' || header.back() == ' ')) header.pop_back();

  std::string descr;
  bool fortran = false;
  Float32Array out;
  detail::HeaderParser(path, header).parse(&descr, &fortran, &out.shape);
  if (descr != "<f4")
    throw NpyError(path + ": expected dtype float32 ('<f4'), found " + detail::describe_descr(descr));
  if (fortran) throw NpyError(path + ": expected C order, found fortran_order True");

  const uint64_t count = detail::element_count(path, out.shape);
  const uint64_t have = bytes.size() - offset - header_len;
  if (have != count * 4)
    throw NpyError(path + ": shape " + shape_str(out.shape) + " needs " + std::to_string(count * 4) +
                   " bytes of float32 data, found " + std::to_string(have) +
                   (have < count * 4 ? " (file truncated)" : " (trailing bytes)"));
  out.data.resize(count);
  if (count) std::memcpy(out.data.data(), bytes.data() + offset + header_len, count * 4);
  return out;
}

// Reads a raw little-endian float32 file whose shape the caller states; the file's byte length
// must be exactly that shape's.
inline Float32Array read_raw_f32(const std::string& path, const std::vector<int64_t>& shape) {
  std::vector<char> bytes = detail::read_file(path);
  const uint64_t count = detail::element_count(path, shape);
  if (bytes.size() != count * 4)
    throw NpyError(path + ": raw float32 of shape " + shape_str(shape) + " is " + std::to_string(count * 4) +
                   " bytes, found " + std::to_string(bytes.size()) + " bytes" +
                   (bytes.size() < count * 4 ? " (file truncated)" : " (file too long)"));
  Float32Array out{shape, std::vector<float>(count)};
  if (count) std::memcpy(out.data.data(), bytes.data(), count * 4);
  return out;
}

// Writes a .npy (version 1.0, '<f4', C order) via a temporary file renamed into place.
inline void write_npy_f32_atomic(const std::string& path, const std::vector<int64_t>& shape,
                                 const float* data, size_t count) {
  if (detail::element_count(path, shape) != count)
    throw NpyError(path + ": " + std::to_string(count) + " values do not fill shape " + shape_str(shape));
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape_str(shape) + ", }";
  // magic(6) + version(2) + length(2) + dict + padding + '\n', a multiple of 64 bytes in total
  size_t total = 10 + dict.size() + 1;
  dict.append((64 - total % 64) % 64, ' ');
  dict += '\n';
  if (dict.size() > 65535) throw NpyError(path + ": shape " + shape_str(shape) + " is too long for .npy 1.0");

  // a hidden sibling, like runtime/atomic.py: <dir>/.<name>.tmp-<pid>
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "" : path.substr(0, slash + 1);
  const std::string tmp = dir + "." + path.substr(dir.size()) + ".tmp-" + std::to_string(::getpid());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw NpyError(path + ": cannot create " + tmp + " (" + std::strerror(errno) + ")");
  const unsigned char head[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0,
                                  static_cast<unsigned char>(dict.size() & 0xff),
                                  static_cast<unsigned char>(dict.size() >> 8)};
  bool ok = std::fwrite(head, 1, 10, f) == 10 && std::fwrite(dict.data(), 1, dict.size(), f) == dict.size() &&
            (count == 0 || std::fwrite(data, 4, count, f) == count);
  ok = (std::fflush(f) == 0) && ok;
  ok = (::fsync(::fileno(f)) == 0) && ok;
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::string why = std::strerror(errno);
    std::remove(tmp.c_str());
    throw NpyError(path + ": write failed (" + why + ")");
  }
}

}  // namespace qmtg
