// depthcraft viewer: one full-screen pass that renders the photo as a height field seen from a
// moving camera (steep parallax occlusion mapping with a binary-search refinement).
//
// Model. Nearness n(u) in 0..1 (1 = nearest) at image point u (image uv, y down). A surface
// point at nearness n appears shifted by (n - focus) * D on screen, with D the camera's
// displacement (uv per unit of nearness: pan, plus a radial part for a dolly). A screen point p
// therefore sees the nearest u with u + (n(u) - focus) * D = p: along the ray
// u(h) = p - (h - focus) * D it is the first h, walking down from h = 1, with n(u(h)) >= h.
// Walking from near to far is what makes nearer surfaces occlude farther ones.
//
// Disocclusions. Where the ray meets a depth edge it hits the edge's wall, which a height field
// would fill with stretched edge pixels (smear). A hit on a wall (surface steeper than the ray)
// takes its colour from the background instead: the foot of the wall is found and the photo is
// mirrored about it, so the hole shows background texture and the foreground edge stays crisp.
//
// The prelude (#version, TEX, TEXLOD, OUT) is prepended by the page for WebGL 2 or WebGL 1.
precision highp float;

uniform sampler2D uPhoto;     // RGBA8, sRGB as displayed
uniform sampler2D uDepth;     // .r = nearness 0..1
uniform vec2 uRes;            // canvas size, device px
uniform vec2 uImg;            // photo size, px
uniform vec2 uScale;          // screen uv -> image uv scale (fit and overscan zoom)
uniform vec3 uCam;            // camera offset: x, y (-1..1 pan), z (-1..1 dolly)
uniform float uIntensity;     // parallax between nearness 0 and 1 at |x| = 1, share of the width
uniform float uFocus;         // nearness that stays still
uniform float uLod;           // photo mip level (texels per screen px, log2)
uniform vec4 uBg;             // letterbox colour (premultiplied)

const int MAX_STEPS = 160;
const int REFINE = 8;
const int FOOT = 24;

float near(vec2 u) { return TEX(uDepth, u).r; }

void main() {
  vec2 s = vec2(gl_FragCoord.x / uRes.x, 1.0 - gl_FragCoord.y / uRes.y);
  vec2 p = 0.5 + (s - 0.5) * uScale;
  if (p.x < 0.0 || p.y < 0.0 || p.x > 1.0 || p.y > 1.0) { OUT = uBg; return; }

  // displacement per unit nearness, uv; camera right (x > 0) moves near surfaces left
  float aspect = uImg.x / uImg.y;
  vec2 D = -uIntensity * vec2(uCam.x, uCam.y * aspect) + uIntensity * uCam.z * 2.0 * (p - 0.5);
  float lenPx = length(D * uImg);
  vec2 u = p - (1.0 - uFocus) * D;
  float h = 1.0;
  if (lenPx > 0.25) {
    // linear search: about one texel per step along the ray, near to far
    float steps = clamp(ceil(lenPx), 2.0, float(MAX_STEPS));
    float dh = 1.0 / steps;
    vec2 du = D * dh;
    float hPrev = 1.0;
    vec2 uPrev = u;
    bool hit = false;
    for (int i = 0; i <= MAX_STEPS; i++) {
      if (near(u) >= h) { hit = true; break; }
      if (float(i) >= steps) break;
      hPrev = h; uPrev = u;
      h -= dh; u += du;
    }
    if (hit && h < 1.0) {
      // binary search between the last point above the surface and the first below it
      float ha = hPrev, hb = h;
      vec2 ua = uPrev, ub = u;
      for (int j = 0; j < REFINE; j++) {
        float hm = 0.5 * (ha + hb);
        vec2 um = 0.5 * (ua + ub);
        if (near(um) >= hm) { hb = hm; ub = um; } else { ha = hm; ua = um; }
      }
      u = ub; h = hb;
    } else if (!hit) {
      u = p + uFocus * D;  // below everything: the farthest plane
    }
    // a wall: the surface along the ray rises faster than the ray descends (stretch > 2)
    vec2 dir = D / lenPx;  // one texel (uv) towards the near side
    float slope = (near(u + 1.5 * dir) - near(u - 1.5 * dir)) / 3.0;
    if (slope * lenPx > 0.5) {
      vec2 f = u;
      float nf = near(f);
      for (int k = 0; k < FOOT; k++) {  // walk down the wall to its foot
        float nb = near(f - dir);
        if (nf - nb < 0.5 / lenPx) break;
        f -= dir; nf = nb;
      }
      // where the background would be seen if it went on under the foreground, mirrored
      // about the foot into the visible background
      vec2 ubg = p - (nf - uFocus) * D;
      vec2 m = f - (ubg - f) - dir;
      u = near(m) <= nf + 0.5 / lenPx * 4.0 ? m : f - dir;
    }
  }
  OUT = TEXLOD(uPhoto, clamp(u, 0.0, 1.0), uLod);
}
