// A loss curve as a PNG (libpng): training loss per step as a line, validation loss as dots,
// axes with tick labels drawn in a small built-in bitmap font. Used by train_gpt.
#pragma once

#include <png.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

namespace loss_plot {

struct Point {
  double x, y;
};

class Canvas {
 public:
  Canvas(int w, int h) : w_(w), h_(h), px_(static_cast<std::size_t>(w * h * 3), 255) {}
  int width() const { return w_; }
  int height() const { return h_; }

  void set(int x, int y, uint32_t rgb) {
    if (x < 0 || y < 0 || x >= w_ || y >= h_) return;
    unsigned char* p = &px_[static_cast<std::size_t>((y * w_ + x) * 3)];
    p[0] = static_cast<unsigned char>(rgb >> 16);
    p[1] = static_cast<unsigned char>(rgb >> 8);
    p[2] = static_cast<unsigned char>(rgb);
  }
  // Bresenham, `thick` pixels wide.
  void line(int x0, int y0, int x1, int y1, uint32_t rgb, int thick = 1) {
    const int dx = std::abs(x1 - x0), dy = -std::abs(y1 - y0);
    const int sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
    int err = dx + dy;
    for (;;) {
      for (int a = 0; a < thick; ++a) {
        for (int b = 0; b < thick; ++b)
          set(x0 + a, y0 + b, rgb);
      }
      if (x0 == x1 && y0 == y1) break;
      const int e2 = 2 * err;
      if (e2 >= dy) {
        err += dy;
        x0 += sx;
      }
      if (e2 <= dx) {
        err += dx;
        y0 += sy;
      }
    }
  }
  void dot(int x, int y, int r, uint32_t rgb) {
    for (int a = -r; a <= r; ++a) {
      for (int b = -r; b <= r; ++b) {
        if (a * a + b * b <= r * r) set(x + a, y + b, rgb);
      }
    }
  }
  // Text in a 3x5 pixel font scaled by `scale`; digits, '.', '-', 'e', and a few letters.
  void text(int x, int y, const std::string& s, uint32_t rgb, int scale = 2) {
    for (char c : s) {
      const unsigned short* g = glyph(c);
      if (g) {
        for (int row = 0; row < 5; ++row) {
          for (int col = 0; col < 3; ++col) {
            if (g[row] & (4 >> col)) {
              for (int a = 0; a < scale; ++a) {
                for (int b = 0; b < scale; ++b)
                  set(x + col * scale + a, y + row * scale + b, rgb);
              }
            }
          }
        }
      }
      x += 4 * scale;
    }
  }
  static int text_width(const std::string& s, int scale = 2) {
    return static_cast<int>(s.size()) * 4 * scale;
  }

  // Throws std::runtime_error naming the path when the file cannot be written.
  void write_png(const std::string& path) const {
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) throw std::runtime_error("cannot write '" + path + "'");
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
    png_infop info = png ? png_create_info_struct(png) : nullptr;
    if (!png || !info || setjmp(png_jmpbuf(png))) {
      png_destroy_write_struct(&png, &info);
      std::fclose(f);
      throw std::runtime_error("libpng failed writing '" + path + "'");
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, static_cast<png_uint_32>(w_), static_cast<png_uint_32>(h_), 8,
                 PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < h_; ++y) {
      png_write_row(png, const_cast<png_bytep>(&px_[static_cast<std::size_t>(y * w_ * 3)]));
    }
    png_write_end(png, nullptr);
    png_destroy_write_struct(&png, &info);
    if (std::fclose(f) != 0) throw std::runtime_error("cannot write '" + path + "'");
  }

 private:
  static const unsigned short* glyph(char c) {
    // Rows top to bottom, 3 bits each (4 = left column).
    static const unsigned short digits[10][5] = {
        {7, 5, 5, 5, 7}, {2, 6, 2, 2, 7}, {7, 1, 7, 4, 7}, {7, 1, 7, 1, 7}, {5, 5, 7, 1, 1},
        {7, 4, 7, 1, 7}, {7, 4, 7, 5, 7}, {7, 1, 1, 1, 1}, {7, 5, 7, 5, 7}, {7, 5, 7, 1, 7}};
    static const unsigned short dot[5] = {0, 0, 0, 0, 2}, minus[5] = {0, 0, 7, 0, 0},
                                e[5] = {7, 4, 7, 4, 7}, s[5] = {7, 4, 7, 1, 7},
                                t[5] = {7, 2, 2, 2, 2}, p[5] = {7, 5, 7, 4, 4},
                                l[5] = {4, 4, 4, 4, 7}, o[5] = {7, 5, 5, 5, 7},
                                v[5] = {5, 5, 5, 5, 2}, a[5] = {7, 5, 7, 5, 5},
                                n[5] = {6, 5, 5, 5, 5}, i[5] = {2, 0, 2, 2, 2},
                                r[5] = {6, 5, 6, 5, 5}, colon[5] = {0, 2, 0, 2, 0},
                                space[5] = {0, 0, 0, 0, 0};
    if (c >= '0' && c <= '9') return digits[c - '0'];
    switch (c) {
      case '.':
        return dot;
      case '-':
        return minus;
      case 'e':
        return e;
      case 's':
        return s;
      case 't':
        return t;
      case 'p':
        return p;
      case 'l':
        return l;
      case 'o':
        return o;
      case 'v':
        return v;
      case 'a':
        return a;
      case 'n':
        return n;
      case 'i':
        return i;
      case 'r':
        return r;
      case ':':
        return colon;
      case ' ':
        return space;
      default:
        return nullptr;
    }
  }

  int w_, h_;
  std::vector<unsigned char> px_;
};

inline std::string format_tick(double v) {
  char buf[32];
  if (std::abs(v) >= 1000 || (std::abs(v) < 0.01 && v != 0)) {
    std::snprintf(buf, sizeof buf, "%.1e", v);
  } else if (std::abs(v) >= 10) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.2f", v);
  }
  return buf;
}

// Training loss (line, blue) and validation loss (dots, orange) against the step. Writes `path`;
// throws std::runtime_error when it cannot.
inline void write(const std::string& path, const std::vector<Point>& train,
                  const std::vector<Point>& val) {
  constexpr int W = 900, H = 520, left = 90, right = 30, top = 40, bottom = 60;
  Canvas c(W, H);
  double x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  bool any = false;
  for (const auto* series : {&train, &val}) {
    for (const Point& p : *series) {
      if (!std::isfinite(p.y)) continue;
      if (!any) {
        x0 = x1 = p.x;
        y0 = y1 = p.y;
        any = true;
      }
      x0 = std::min(x0, p.x);
      x1 = std::max(x1, p.x);
      y0 = std::min(y0, p.y);
      y1 = std::max(y1, p.y);
    }
  }
  if (x1 <= x0) x1 = x0 + 1;
  if (y1 <= y0) y1 = y0 + 1;
  const double pad = 0.05 * (y1 - y0);
  y0 -= pad;
  y1 += pad;
  const int pw = W - left - right, ph = H - top - bottom;
  auto X = [&](double x) {
    return left + static_cast<int>(std::lround((x - x0) / (x1 - x0) * pw));
  };
  auto Y = [&](double y) {
    return top + ph - static_cast<int>(std::lround((y - y0) / (y1 - y0) * ph));
  };
  const uint32_t axis = 0x333333, grid = 0xe4e4e4, blue = 0x1f77b4, orange = 0xff7f0e;
  for (int i = 0; i <= 5; ++i) {
    const double yv = y0 + (y1 - y0) * i / 5.0;
    const int y = Y(yv);
    c.line(left, y, left + pw, y, grid);
    const std::string label = format_tick(yv);
    c.text(left - 8 - Canvas::text_width(label), y - 5, label, axis);
    const double xv = x0 + (x1 - x0) * i / 5.0;
    const int x = X(xv);
    c.line(x, top, x, top + ph, grid);
    char xl_buf[32];
    std::snprintf(xl_buf, sizeof xl_buf, "%.0f", xv);
    const std::string xl = xl_buf;
    c.text(x - Canvas::text_width(xl) / 2, top + ph + 10, xl, axis);
  }
  c.line(left, top, left, top + ph, axis, 2);
  c.line(left, top + ph, left + pw, top + ph, axis, 2);
  c.text(left + pw / 2 - Canvas::text_width("step") / 2, H - 24, "step", axis);
  c.text(left, 12, "loss", blue);
  if (!val.empty()) c.text(left + 60, 12, "val loss", orange);
  const Point* prev = nullptr;
  for (const Point& p : train) {
    if (!std::isfinite(p.y)) {
      prev = nullptr;
      continue;
    }
    if (prev) c.line(X(prev->x), Y(prev->y), X(p.x), Y(p.y), blue, 2);
    prev = &p;
  }
  for (const Point& p : val) {
    if (std::isfinite(p.y)) c.dot(X(p.x), Y(p.y), 4, orange);
  }
  c.write_png(path);
}

}  // namespace loss_plot
