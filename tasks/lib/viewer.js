// depthcraft viewer: the page's only script. It draws the photo with parallax from its depth in
// one WebGL pass (viewer.frag) and moves the camera with the pointer, the phone's tilt, or an
// automatic loop. Until the first frame is drawn, and wherever WebGL is missing or fails, the
// <img> of the photo is what shows. <html data-state> says loading | ready | fallback and
// data-frames counts the frames drawn (automated checks wait on them).
(function () {
  'use strict';
  var html = document.documentElement;
  var root = document.getElementById('dc');
  var photo = document.getElementById('dc-photo');
  var canvas = document.getElementById('dc-canvas');
  var tiltButton = document.getElementById('dc-tilt');
  var cfg = JSON.parse(document.getElementById('dc-config').textContent);
  var FRAG = document.getElementById('dc-frag').textContent;
  var IDLE_MS = 2500;     // no input for this long: the automatic loop takes over (auto = idle)
  var BLEND_MS = 1200;    // the loop fades in from wherever the camera is
  var FOLLOW_S = 0.12;    // time constant of the camera following the pointer or tilt
  var NUMBERS = { intensity: [0, 0.3], focus: [0, 1], period: [0.5, 600], start_x: [-1, 1], start_y: [-1, 1] };
  var CHOICES = { motion: /^(orbit|circle|swing|swing_vertical|dolly)$/, auto: /^(idle|always|off)$/,
                  fit: /^(contain|cover)$/ };
  var P, fixed;  // live parameters; the fixed camera {x, y, z} the URL fragment asks for, or null

  function clamp(v, lo, hi) { return v < lo ? lo : v > hi ? hi : v; }
  function now() { return window.performance ? performance.now() : Date.now(); }

  // -- parameters: the step's, then the URL fragment's (#x=-1&y=0&intensity=0.04) -----------
  function readHash() {
    P = {};
    for (var k in cfg.params) P[k] = cfg.params[k];
    fixed = null;
    var h = (location.hash || '').replace(/^#/, '');
    h.split('&').forEach(function (kv) {
      if (!kv) return;
      var i = kv.indexOf('=');
      var key, val;
      try {
        key = decodeURIComponent(i < 0 ? kv : kv.slice(0, i));
        val = decodeURIComponent(i < 0 ? '' : kv.slice(i + 1));
      } catch (e) { return; }
      var num = parseFloat(val);
      if (key === 'x' || key === 'y' || key === 'z') {
        if (isFinite(num)) { fixed = fixed || { x: 0, y: 0, z: 0 }; fixed[key] = clamp(num, -1, 1); }
      } else if (NUMBERS[key]) {
        if (isFinite(num)) P[key] = clamp(num, NUMBERS[key][0], NUMBERS[key][1]);
      } else if (CHOICES[key] && CHOICES[key].test(val)) {
        P[key] = val;
      }
    });
    root.classList.toggle('cover', P.fit === 'cover');
  }

  // -- the automatic loop: unit camera paths, one period long ---------------------------------
  function path(t) {
    var a = 2 * Math.PI * t / P.period, back = 0.5 - 0.5 * Math.cos(a);
    switch (P.motion) {
      case 'circle': return { x: Math.cos(a), y: Math.sin(a), z: 0 };
      case 'swing': return { x: Math.sin(a), y: 0, z: 0 };
      case 'swing_vertical': return { x: 0, y: Math.sin(a), z: 0 };
      case 'dolly': return { x: 0, y: -0.15 * back, z: back };
      default: return { x: Math.cos(a), y: 0.5 * Math.sin(a), z: 0 };  // orbit
    }
  }

  function showPhoto(reason) {
    root.classList.remove('gl');
    html.setAttribute('data-state', 'fallback');
    html.setAttribute('data-reason', reason);
  }

  // -- WebGL -------------------------------------------------------------------------------
  var gl = null, prog = null, loc = {}, webgl2 = false, photoTex = null, depthTex = null;
  var depthData = null, depthW = 0, depthH = 0;
  var VERT = 'attribute vec2 a;void main(){gl_Position=vec4(a,0.0,1.0);}';
  var VERT2 = '#version 300 es\nin vec2 a;void main(){gl_Position=vec4(a,0.0,1.0);}';
  var PRE1 = '#define TEX texture2D\n#define TEXLOD(s, u, l) texture2D(s, u)\n#define OUT gl_FragColor\n';
  var PRE2 = '#version 300 es\n#define TEX texture\n#define TEXLOD textureLod\nout highp vec4 dcOut;\n#define OUT dcOut\n';

  function context() {
    var opts = { alpha: true, antialias: false, depth: false, stencil: false, premultipliedAlpha: true,
                 preserveDrawingBuffer: false, powerPreference: 'low-power' };
    try {
      var c = canvas.getContext('webgl2', opts);
      if (c) { webgl2 = true; return c; }
      webgl2 = false;
      return canvas.getContext('webgl', opts) || canvas.getContext('experimental-webgl', opts);
    } catch (e) { return null; }
  }

  function shader(type, src) {
    var s = gl.createShader(type);
    gl.shaderSource(s, src);
    gl.compileShader(s);
    if (!gl.getShaderParameter(s, gl.COMPILE_STATUS) && !gl.isContextLost()) {
      throw new Error('shader: ' + gl.getShaderInfoLog(s));
    }
    return s;
  }

  function texture(filter) {
    var t = gl.createTexture();
    gl.bindTexture(gl.TEXTURE_2D, t);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.LINEAR);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, filter);
    return t;
  }

  function setup() {
    gl = context();
    if (!gl) throw new Error('no WebGL');
    var max = gl.getParameter(gl.MAX_TEXTURE_SIZE);
    if (photo.naturalWidth > max || photo.naturalHeight > max) throw new Error('photo larger than ' + max);
    prog = gl.createProgram();
    gl.attachShader(prog, shader(gl.VERTEX_SHADER, webgl2 ? VERT2 : VERT));
    gl.attachShader(prog, shader(gl.FRAGMENT_SHADER, (webgl2 ? PRE2 : PRE1) + FRAG));
    gl.bindAttribLocation(prog, 0, 'a');
    gl.linkProgram(prog);
    if (!gl.getProgramParameter(prog, gl.LINK_STATUS) && !gl.isContextLost()) {
      throw new Error('link: ' + gl.getProgramInfoLog(prog));
    }
    gl.useProgram(prog);
    ['uPhoto', 'uDepth', 'uRes', 'uImg', 'uScale', 'uCam', 'uIntensity', 'uFocus', 'uLod', 'uBg']
      .forEach(function (n) { loc[n] = gl.getUniformLocation(prog, n); });
    var buf = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, buf);
    gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-1, -1, 3, -1, -1, 3]), gl.STATIC_DRAW);
    gl.enableVertexAttribArray(0);
    gl.vertexAttribPointer(0, 2, gl.FLOAT, false, 0, 0);

    // the photo: colour-managed like the <img>; mipmapped where the API allows (WebGL 2)
    gl.activeTexture(gl.TEXTURE0);
    photoTex = texture(webgl2 ? gl.LINEAR_MIPMAP_LINEAR : gl.LINEAR);
    gl.pixelStorei(gl.UNPACK_COLORSPACE_CONVERSION_WEBGL, gl.BROWSER_DEFAULT_WEBGL);
    gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA, gl.RGBA, gl.UNSIGNED_BYTE, photo);
    if (webgl2) gl.generateMipmap(gl.TEXTURE_2D);

    // the depth: float where it can be filtered (WebGL 2: R32F with the linear-filter
    // extension, else R16F), 8-bit otherwise
    gl.activeTexture(gl.TEXTURE1);
    depthTex = texture(gl.LINEAR);
    gl.pixelStorei(gl.UNPACK_ALIGNMENT, 1);
    if (webgl2) {
      var f32 = !!gl.getExtension('OES_texture_float_linear');
      gl.texImage2D(gl.TEXTURE_2D, 0, f32 ? gl.R32F : gl.R16F, depthW, depthH, 0, gl.RED, gl.FLOAT, depthData);
    } else {
      var u8 = new Uint8Array(depthData.length);
      for (var i = 0; i < u8.length; i++) u8[i] = Math.round(depthData[i] * 255);
      gl.texImage2D(gl.TEXTURE_2D, 0, gl.LUMINANCE, depthW, depthH, 0, gl.LUMINANCE, gl.UNSIGNED_BYTE, u8);
    }
    gl.uniform1i(loc.uPhoto, 0);
    gl.uniform1i(loc.uDepth, 1);
    var err = gl.getError();
    if (err !== gl.NO_ERROR && !gl.isContextLost()) throw new Error('WebGL error ' + err);
  }

  // -- drawing -----------------------------------------------------------------------------
  var frames = 0, sizeDirty = true, devW = 0, devH = 0;
  function resize() {
    var r = root.getBoundingClientRect();
    var dpr = window.devicePixelRatio || 1;
    var w = Math.max(1, Math.round(r.width * dpr)), h = Math.max(1, Math.round(r.height * dpr));
    var cap = gl ? gl.getParameter(gl.MAX_VIEWPORT_DIMS) : [8192, 8192];
    var k = Math.min(1, cap[0] / w, cap[1] / h);
    devW = Math.max(1, Math.floor(w * k)); devH = Math.max(1, Math.floor(h * k));
    if (canvas.width !== devW || canvas.height !== devH) { canvas.width = devW; canvas.height = devH; }
    sizeDirty = false;
  }

  function draw(cam) {
    if (sizeDirty) resize();
    var W = photo.naturalWidth, H = photo.naturalHeight, ai = W / H, ac = devW / devH;
    var sx, sy;
    if ((ac > ai) === (P.fit === 'cover')) { sx = 1; sy = ai / ac; } else { sx = ac / ai; sy = 1; }
    // overscan: zoom in just enough that no camera position in range sees past the photo
    var reach = P.intensity * Math.max(P.focus, 1 - P.focus);
    // (uv units: a pan of x = 1 shifts by reach in x; y = 1 by reach * W / H in y; the dolly
    // loop by reach radially at the edges, with its slight rise)
    var margin = reach * Math.max(1, ai, 1 + 0.15 * ai);
    var zoom = 1 / Math.max(0.5, 1 - 2 * margin);
    sx /= zoom; sy /= zoom;
    gl.viewport(0, 0, devW, devH);
    gl.uniform2f(loc.uRes, devW, devH);
    gl.uniform2f(loc.uImg, W, H);
    gl.uniform2f(loc.uScale, sx, sy);
    gl.uniform3f(loc.uCam, cam.x, cam.y, cam.z);
    gl.uniform1f(loc.uIntensity, P.intensity);
    gl.uniform1f(loc.uFocus, P.focus);
    gl.uniform1f(loc.uLod, Math.max(0, Math.log(W * sx / devW) / Math.LN2));
    gl.uniform4f(loc.uBg, 0, 0, 0, 0);
    gl.drawArrays(gl.TRIANGLES, 0, 3);
    frames++;
    html.setAttribute('data-frames', String(frames));
    html.setAttribute('data-cam', cam.x.toFixed(3) + ',' + cam.y.toFixed(3) + ',' + cam.z.toFixed(3));
    if (frames === 1) { root.classList.add('gl'); html.setAttribute('data-state', 'ready'); }
  }

  // -- the camera: fixed (fragment), following input, or the automatic loop -------------------
  var cam = { x: 0, y: 0, z: 0 }, target = { x: 0, y: 0, z: 0 }, drawn = null;
  var lastInput = -1e12, loopFrom = null, loopStart = 0, lastT = 0, raf = 0, idleTimer = 0, visible = true;
  var reduceMotion = window.matchMedia && matchMedia('(prefers-reduced-motion: reduce)').matches;

  function looping(t) {
    if (fixed || P.auto === 'off' || reduceMotion) return false;
    return P.auto === 'always' || t - lastInput > IDLE_MS;
  }

  function frame(t) {
    raf = 0;
    if (!gl || gl.isContextLost()) return;
    var dt = Math.min(0.1, Math.max(0, (t - lastT) / 1000));
    lastT = t;
    var more = false;
    if (fixed) {
      cam = { x: fixed.x, y: fixed.y, z: fixed.z };
    } else if (looping(t)) {
      if (!loopFrom) { loopFrom = { x: cam.x, y: cam.y, z: cam.z }; loopStart = t; }
      var p = path(t - loopStart), b = Math.min(1, (t - loopStart) / BLEND_MS);
      b = b * b * (3 - 2 * b);
      cam = { x: loopFrom.x + (p.x - loopFrom.x) * b, y: loopFrom.y + (p.y - loopFrom.y) * b,
              z: loopFrom.z + (p.z - loopFrom.z) * b };
      more = true;
    } else {
      loopFrom = null;
      var k = 1 - Math.exp(-dt / FOLLOW_S);
      cam = { x: cam.x + (target.x - cam.x) * k, y: cam.y + (target.y - cam.y) * k, z: cam.z + (target.z - cam.z) * k };
      more = Math.abs(target.x - cam.x) + Math.abs(target.y - cam.y) + Math.abs(target.z - cam.z) > 1e-4;
      if (!more) cam = { x: target.x, y: target.y, z: target.z };
    }
    // draw only when the camera moved (or the canvas changed size)
    if (sizeDirty || !drawn || drawn.x !== cam.x || drawn.y !== cam.y || drawn.z !== cam.z) {
      draw(cam);
      drawn = cam;
    }
    if (more && visible) schedule();
    else if (!fixed && P.auto === 'idle' && !reduceMotion) {
      clearTimeout(idleTimer);  // wake up when the idle loop is due
      idleTimer = setTimeout(schedule, Math.max(50, lastInput + IDLE_MS - now() + 20));
    }
  }

  function schedule() {
    if (!raf && gl && visible) { lastT = lastT || now(); raf = requestAnimationFrame(frame); }
  }

  function input(x, y) {
    if (fixed) return;
    lastInput = now();
    target = { x: clamp(x, -1, 1), y: clamp(y, -1, 1), z: 0 };
    schedule();
  }

  function listen() {
    root.addEventListener('pointermove', function (e) {
      var r = root.getBoundingClientRect();
      input(2 * (e.clientX - r.left) / r.width - 1, 2 * (e.clientY - r.top) / r.height - 1);
    });
    // phone tilt: relative to how the phone was held at the first reading
    var base = null;
    function orient(e) {
      if (e.beta == null || e.gamma == null) return;
      if (!base) base = { b: e.beta, g: e.gamma };
      input((e.gamma - base.g) / 25, (e.beta - base.b) / 25);
    }
    var DOE = window.DeviceOrientationEvent;
    var touch = window.matchMedia && matchMedia('(pointer: coarse)').matches;
    if (DOE && typeof DOE.requestPermission === 'function' && touch) {
      // iOS asks for permission, and only from a user gesture
      tiltButton.hidden = false;
      tiltButton.addEventListener('click', function () {
        DOE.requestPermission().then(function (s) {
          if (s === 'granted') window.addEventListener('deviceorientation', orient);
        }, function () {}).then(function () { tiltButton.hidden = true; });
      });
    } else if (DOE && typeof DOE.requestPermission !== 'function') {
      window.addEventListener('deviceorientation', orient);
    }
    window.addEventListener('hashchange', function () { readHash(); drawn = null; start(); });
    function resized() {
      var r = root.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
      if (Math.round(r.width * dpr) !== devW || Math.round(r.height * dpr) !== devH) { sizeDirty = true; schedule(); }
    }
    if (window.ResizeObserver) new ResizeObserver(resized).observe(root);
    window.addEventListener('resize', resized);  // also a devicePixelRatio change (zoom, another screen)
    if (window.IntersectionObserver) {
      new IntersectionObserver(function (es) {
        visible = es[es.length - 1].isIntersecting;
        if (visible) schedule();
      }).observe(root);
    }
    canvas.addEventListener('webglcontextlost', function (e) { e.preventDefault(); showPhoto('context lost'); });
    canvas.addEventListener('webglcontextrestored', function () {
      try { setup(); drawn = null; frames = 0; start(); } catch (e) { showPhoto(String(e.message || e)); }
    });
  }

  function start() {
    if (!fixed) {
      cam = { x: P.start_x, y: P.start_y, z: 0 };
      target = { x: cam.x, y: cam.y, z: 0 };
    }
    lastInput = P.auto === 'idle' ? -1e12 : lastInput;
    loopFrom = null;
    schedule();
  }

  // -- the depth map: PNG, 8-bit gray or 16-bit packed (R high byte, G low byte) --------------
  function decodeDepth(img) {
    var w = img.naturalWidth || img.width, h = img.naturalHeight || img.height;
    var c = document.createElement('canvas');
    c.width = w; c.height = h;
    var g = c.getContext('2d', { willReadFrequently: true });
    g.drawImage(img, 0, 0);
    var d = g.getImageData(0, 0, w, h).data, out = new Float32Array(w * h), i;
    if (cfg.depth.bits === 16) for (i = 0; i < out.length; i++) out[i] = (d[4 * i] * 256 + d[4 * i + 1]) / 65535;
    else for (i = 0; i < out.length; i++) out[i] = d[4 * i] / 255;
    depthData = out; depthW = w; depthH = h;
  }

  function loaded(img) {
    return img.complete && img.naturalWidth ? Promise.resolve(img) : new Promise(function (ok, bad) {
      img.onload = function () { ok(img); };
      img.onerror = function () { bad(new Error('image did not decode')); };
    });
  }

  readHash();
  var depthImg = new Image();
  depthImg.src = cfg.depth.uri;
  Promise.all([loaded(photo), loaded(depthImg)]).then(function () {
    // the depth values as stored, with no colour management (where the browser can say so)
    if (window.createImageBitmap) {
      return createImageBitmap(depthImg, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' })
        .then(decodeDepth, function () { decodeDepth(depthImg); });
    }
    decodeDepth(depthImg);
  }).then(function () {
    setup();
    listen();
    start();
  }).catch(function (e) {
    // no WebGL, a failed shader, an undecodable map: the photo itself stays on screen
    showPhoto(String((e && e.message) || e));
  });
})();
