// Behavioural model of the Lattice ECP5 sysDSP multiplier MULT18X18D, for gate-level
// simulation of netlists that instantiate it (Yosys ships only a black box, share/ecp5/cells_bb.v).
// Part of qmac (hw/models/mult18x18d.v); tested on its own in tests/test_ecp5_mac.py.
//
// Written from Lattice's "ECP5 and ECP5-5G sysDSP Usage Guide" (FPGA-TN-02205, formerly TN1267)
// and the port and parameter list of Yosys's black box:
//   P[35:0] = A[17:0] * B[17:0], each operand read as two's complement when its SIGNEDA /
//   SIGNEDB input is high, else unsigned; SIGNEDP = SIGNEDA | SIGNEDB (the product's signedness).
//   Register stages, each optional: input registers on A (with SIGNEDA), B (with SIGNEDB) and
//   C; the pipeline register after the multiplier; the output register on P. Each stage picks
//   its clock (REG_*_CLK = "NONE" | "CLK0".."CLK3"; "NONE" bypasses the stage), its clock enable
//   (REG_*_CE = "CE0".."CE3", active high) and its reset (REG_*_RST = "RST0".."RST3", active
//   high, to zero), synchronous or asynchronous by RESETMODE ("SYNC" | "ASYNC").
//   ROA / ROB / ROC: the A, B, C operands after their input registers (the cascade outputs);
//   SROA / SROB: the same A and B (the shift-chain outputs).
// Modelling choices (not stated by the usage guide; they do not matter to qmac's instances,
// which tie SIGNEDA/SIGNEDB to constants and RST0 low):
//   - reset has priority over the clock enable;
//   - the sign controls travel with their operand through the input register and with the
//     product through the pipeline and output registers;
//   - GSR: every register starts at zero ("ENABLED" and "DISABLED" alike); no global
//     set/reset primitive is modelled.
// Not modelled, refused: the shift chain (SOURCEA/SOURCEB high: SRIA/SRIB as operands; a
// runtime $fatal), CAS_MATCH_REG = "TRUE", MULT_BYPASS = "ENABLED", HIGHSPEED_CLK other than
// "NONE", CLKn_DIV other than "ENABLED", and any unknown parameter value (an initial $fatal).
// SOURCEB_MODE is accepted and ignored (it only matters with the shift chain).

/* verilator lint_off DECLFILENAME */
// One optional register stage: bypassed when CLK is "NONE" (its unused inputs are then
// expected, hence the UNUSEDSIGNAL waiver).
/* verilator lint_off UNUSEDSIGNAL */
module qmac_mult18x18d_stage #(
    parameter integer WIDTH = 1,
    parameter CLK = "NONE",
    parameter CE = "CE0",
    parameter RST = "RST0",
    parameter [8*5-1:0] RESETMODE = "SYNC"
) (
    input [3:0] clk, ce, rst,
    input [WIDTH-1:0] d,
    output [WIDTH-1:0] q
);
    localparam integer CLK_INDEX = CLK == "CLK0" ? 0 : CLK == "CLK1" ? 1 : CLK == "CLK2" ? 2 :
                                   CLK == "CLK3" ? 3 : -1;
    localparam integer CE_INDEX = CE == "CE0" ? 0 : CE == "CE1" ? 1 : CE == "CE2" ? 2 :
                                  CE == "CE3" ? 3 : -1;
    localparam integer RST_INDEX = RST == "RST0" ? 0 : RST == "RST1" ? 1 : RST == "RST2" ? 2 :
                                   RST == "RST3" ? 3 : -1;
    initial begin
        if (CLK != "NONE" && CLK_INDEX < 0) $fatal(1, "MULT18X18D: unknown register clock %s", CLK);
        if (CE_INDEX < 0) $fatal(1, "MULT18X18D: unknown register clock enable %s", CE);
        if (RST_INDEX < 0) $fatal(1, "MULT18X18D: unknown register reset %s", RST);
        if (RESETMODE != "SYNC" && RESETMODE != "ASYNC")
            $fatal(1, "MULT18X18D: RESETMODE must be SYNC or ASYNC, not %s", RESETMODE);
    end
    generate
        if (CLK == "NONE") begin : bypass
            assign q = d;
        end else begin : register
            wire c = clk[CLK_INDEX < 0 ? 0 : CLK_INDEX];
            wire e = ce[CE_INDEX < 0 ? 0 : CE_INDEX];
            wire r = rst[RST_INDEX < 0 ? 0 : RST_INDEX];
            reg [WIDTH-1:0] value = {WIDTH{1'b0}};
            if (RESETMODE == "ASYNC") begin : async_reset
                always @(posedge c or posedge r)
                    if (r) value <= {WIDTH{1'b0}};
                    else if (e) value <= d;
            end else begin : sync_reset
                always @(posedge c)
                    if (r) value <= {WIDTH{1'b0}};
                    else if (e) value <= d;
            end
            assign q = value;
        end
    endgenerate
endmodule
/* verilator lint_on UNUSEDSIGNAL */

module MULT18X18D (
    A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0, B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0, C17, C16, C15, C14, C13, C12, C11, C10, C9, C8, C7, C6, C5, C4, C3, C2, C1, C0, SIGNEDA, SIGNEDB, SOURCEA, SOURCEB, CLK3, CLK2, CLK1, CLK0, CE3, CE2, CE1, CE0, RST3, RST2, RST1, RST0, SRIA17, SRIA16, SRIA15, SRIA14, SRIA13, SRIA12, SRIA11, SRIA10, SRIA9, SRIA8, SRIA7, SRIA6, SRIA5, SRIA4, SRIA3, SRIA2, SRIA1, SRIA0, SRIB17, SRIB16, SRIB15, SRIB14, SRIB13, SRIB12, SRIB11, SRIB10, SRIB9, SRIB8, SRIB7, SRIB6, SRIB5, SRIB4, SRIB3, SRIB2, SRIB1, SRIB0,
    SROA17, SROA16, SROA15, SROA14, SROA13, SROA12, SROA11, SROA10, SROA9, SROA8, SROA7, SROA6, SROA5, SROA4, SROA3, SROA2, SROA1, SROA0, SROB17, SROB16, SROB15, SROB14, SROB13, SROB12, SROB11, SROB10, SROB9, SROB8, SROB7, SROB6, SROB5, SROB4, SROB3, SROB2, SROB1, SROB0, ROA17, ROA16, ROA15, ROA14, ROA13, ROA12, ROA11, ROA10, ROA9, ROA8, ROA7, ROA6, ROA5, ROA4, ROA3, ROA2, ROA1, ROA0, ROB17, ROB16, ROB15, ROB14, ROB13, ROB12, ROB11, ROB10, ROB9, ROB8, ROB7, ROB6, ROB5, ROB4, ROB3, ROB2, ROB1, ROB0, ROC17, ROC16, ROC15, ROC14, ROC13, ROC12, ROC11, ROC10, ROC9, ROC8, ROC7, ROC6, ROC5, ROC4, ROC3, ROC2, ROC1, ROC0, P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20, P19, P18, P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2, P1, P0, SIGNEDP
);
    parameter REG_INPUTA_CLK = "NONE";
    parameter REG_INPUTA_CE = "CE0";
    parameter REG_INPUTA_RST = "RST0";
    parameter REG_INPUTB_CLK = "NONE";
    parameter REG_INPUTB_CE = "CE0";
    parameter REG_INPUTB_RST = "RST0";
    parameter REG_INPUTC_CLK = "NONE";
    parameter REG_INPUTC_CE = "CE0";
    parameter REG_INPUTC_RST = "RST0";
    parameter REG_PIPELINE_CLK = "NONE";
    parameter REG_PIPELINE_CE = "CE0";
    parameter REG_PIPELINE_RST = "RST0";
    parameter REG_OUTPUT_CLK = "NONE";
    parameter REG_OUTPUT_CE = "CE0";
    parameter REG_OUTPUT_RST = "RST0";
    parameter CLK0_DIV = "ENABLED";
    parameter CLK1_DIV = "ENABLED";
    parameter CLK2_DIV = "ENABLED";
    parameter CLK3_DIV = "ENABLED";
    parameter HIGHSPEED_CLK = "NONE";
    parameter [8*8-1:0] GSR = "ENABLED";
    parameter CAS_MATCH_REG = "FALSE";
    /* verilator lint_off UNUSEDPARAM */
    parameter SOURCEB_MODE = "B_SHIFT";
    /* verilator lint_on UNUSEDPARAM */
    parameter MULT_BYPASS = "DISABLED";
    parameter [8*5-1:0] RESETMODE = "SYNC";

    input A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0;
    input B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0;
    input C17, C16, C15, C14, C13, C12, C11, C10, C9, C8, C7, C6, C5, C4, C3, C2, C1, C0;
    input SIGNEDA, SIGNEDB, SOURCEA, SOURCEB;
    input CLK3, CLK2, CLK1, CLK0;
    input CE3, CE2, CE1, CE0;
    input RST3, RST2, RST1, RST0;
    input SRIA17, SRIA16, SRIA15, SRIA14, SRIA13, SRIA12, SRIA11, SRIA10, SRIA9, SRIA8, SRIA7, SRIA6, SRIA5, SRIA4, SRIA3, SRIA2, SRIA1, SRIA0;
    input SRIB17, SRIB16, SRIB15, SRIB14, SRIB13, SRIB12, SRIB11, SRIB10, SRIB9, SRIB8, SRIB7, SRIB6, SRIB5, SRIB4, SRIB3, SRIB2, SRIB1, SRIB0;
    output SROA17, SROA16, SROA15, SROA14, SROA13, SROA12, SROA11, SROA10, SROA9, SROA8, SROA7, SROA6, SROA5, SROA4, SROA3, SROA2, SROA1, SROA0;
    output SROB17, SROB16, SROB15, SROB14, SROB13, SROB12, SROB11, SROB10, SROB9, SROB8, SROB7, SROB6, SROB5, SROB4, SROB3, SROB2, SROB1, SROB0;
    output ROA17, ROA16, ROA15, ROA14, ROA13, ROA12, ROA11, ROA10, ROA9, ROA8, ROA7, ROA6, ROA5, ROA4, ROA3, ROA2, ROA1, ROA0;
    output ROB17, ROB16, ROB15, ROB14, ROB13, ROB12, ROB11, ROB10, ROB9, ROB8, ROB7, ROB6, ROB5, ROB4, ROB3, ROB2, ROB1, ROB0;
    output ROC17, ROC16, ROC15, ROC14, ROC13, ROC12, ROC11, ROC10, ROC9, ROC8, ROC7, ROC6, ROC5, ROC4, ROC3, ROC2, ROC1, ROC0;
    output P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20, P19, P18, P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2, P1, P0;
    output SIGNEDP;

    initial begin
        if (CAS_MATCH_REG != "FALSE")
            $fatal(1, "MULT18X18D model: CAS_MATCH_REG = %s is not modelled", CAS_MATCH_REG);
        if (MULT_BYPASS != "DISABLED")
            $fatal(1, "MULT18X18D model: MULT_BYPASS = %s is not modelled", MULT_BYPASS);
        if (HIGHSPEED_CLK != "NONE")
            $fatal(1, "MULT18X18D model: HIGHSPEED_CLK = %s is not modelled", HIGHSPEED_CLK);
        if (CLK0_DIV != "ENABLED" || CLK1_DIV != "ENABLED" || CLK2_DIV != "ENABLED" ||
                CLK3_DIV != "ENABLED")
            $fatal(1, "MULT18X18D model: CLKn_DIV other than ENABLED is not modelled");
        if (GSR != "ENABLED" && GSR != "DISABLED")
            $fatal(1, "MULT18X18D model: GSR must be ENABLED or DISABLED, not %s", GSR);
    end
    always @* begin
        if (SOURCEA === 1'b1 || SOURCEB === 1'b1)
            $fatal(1, "MULT18X18D model: the shift chain (SOURCEA/SOURCEB high) is not modelled");
    end

    wire [3:0] clk = {CLK3, CLK2, CLK1, CLK0};
    wire [3:0] ce = {CE3, CE2, CE1, CE0};
    wire [3:0] rst = {RST3, RST2, RST1, RST0};
    wire [17:0] a = {A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0};
    wire [17:0] b = {B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0};
    wire [17:0] c = {C17, C16, C15, C14, C13, C12, C11, C10, C9, C8, C7, C6, C5, C4, C3, C2, C1, C0};

    // Input registers: the operand with its sign control.
    wire [18:0] a_reg, b_reg;
    wire [17:0] c_reg;
    qmac_mult18x18d_stage #(.WIDTH(19), .CLK(REG_INPUTA_CLK), .CE(REG_INPUTA_CE),
        .RST(REG_INPUTA_RST), .RESETMODE(RESETMODE))
        input_a (.clk(clk), .ce(ce), .rst(rst), .d({SIGNEDA, a}), .q(a_reg));
    qmac_mult18x18d_stage #(.WIDTH(19), .CLK(REG_INPUTB_CLK), .CE(REG_INPUTB_CE),
        .RST(REG_INPUTB_RST), .RESETMODE(RESETMODE))
        input_b (.clk(clk), .ce(ce), .rst(rst), .d({SIGNEDB, b}), .q(b_reg));
    qmac_mult18x18d_stage #(.WIDTH(18), .CLK(REG_INPUTC_CLK), .CE(REG_INPUTC_CE),
        .RST(REG_INPUTC_RST), .RESETMODE(RESETMODE))
        input_c (.clk(clk), .ce(ce), .rst(rst), .d(c), .q(c_reg));

    // The multiplier: each operand extended to 36 bits as its sign control says; the low 36
    // bits of the product are exact for every signedness of 18-bit operands.
    wire [35:0] a_wide = {{18{a_reg[18] & a_reg[17]}}, a_reg[17:0]};
    wire [35:0] b_wide = {{18{b_reg[18] & b_reg[17]}}, b_reg[17:0]};
    /* verilator lint_off UNUSEDSIGNAL */
    wire [71:0] full = a_wide * b_wide;
    /* verilator lint_on UNUSEDSIGNAL */
    wire [36:0] product = {a_reg[18] | b_reg[18], full[35:0]};

    wire [36:0] pipeline_reg, output_reg;
    qmac_mult18x18d_stage #(.WIDTH(37), .CLK(REG_PIPELINE_CLK), .CE(REG_PIPELINE_CE),
        .RST(REG_PIPELINE_RST), .RESETMODE(RESETMODE))
        pipeline (.clk(clk), .ce(ce), .rst(rst), .d(product), .q(pipeline_reg));
    qmac_mult18x18d_stage #(.WIDTH(37), .CLK(REG_OUTPUT_CLK), .CE(REG_OUTPUT_CE),
        .RST(REG_OUTPUT_RST), .RESETMODE(RESETMODE))
        out (.clk(clk), .ce(ce), .rst(rst), .d(pipeline_reg), .q(output_reg));

    assign P0 = output_reg[0];
    assign P1 = output_reg[1];
    assign P2 = output_reg[2];
    assign P3 = output_reg[3];
    assign P4 = output_reg[4];
    assign P5 = output_reg[5];
    assign P6 = output_reg[6];
    assign P7 = output_reg[7];
    assign P8 = output_reg[8];
    assign P9 = output_reg[9];
    assign P10 = output_reg[10];
    assign P11 = output_reg[11];
    assign P12 = output_reg[12];
    assign P13 = output_reg[13];
    assign P14 = output_reg[14];
    assign P15 = output_reg[15];
    assign P16 = output_reg[16];
    assign P17 = output_reg[17];
    assign P18 = output_reg[18];
    assign P19 = output_reg[19];
    assign P20 = output_reg[20];
    assign P21 = output_reg[21];
    assign P22 = output_reg[22];
    assign P23 = output_reg[23];
    assign P24 = output_reg[24];
    assign P25 = output_reg[25];
    assign P26 = output_reg[26];
    assign P27 = output_reg[27];
    assign P28 = output_reg[28];
    assign P29 = output_reg[29];
    assign P30 = output_reg[30];
    assign P31 = output_reg[31];
    assign P32 = output_reg[32];
    assign P33 = output_reg[33];
    assign P34 = output_reg[34];
    assign P35 = output_reg[35];
    assign SIGNEDP = output_reg[36];
    assign ROA0 = a_reg[0];
    assign ROA1 = a_reg[1];
    assign ROA2 = a_reg[2];
    assign ROA3 = a_reg[3];
    assign ROA4 = a_reg[4];
    assign ROA5 = a_reg[5];
    assign ROA6 = a_reg[6];
    assign ROA7 = a_reg[7];
    assign ROA8 = a_reg[8];
    assign ROA9 = a_reg[9];
    assign ROA10 = a_reg[10];
    assign ROA11 = a_reg[11];
    assign ROA12 = a_reg[12];
    assign ROA13 = a_reg[13];
    assign ROA14 = a_reg[14];
    assign ROA15 = a_reg[15];
    assign ROA16 = a_reg[16];
    assign ROA17 = a_reg[17];
    assign ROB0 = b_reg[0];
    assign ROB1 = b_reg[1];
    assign ROB2 = b_reg[2];
    assign ROB3 = b_reg[3];
    assign ROB4 = b_reg[4];
    assign ROB5 = b_reg[5];
    assign ROB6 = b_reg[6];
    assign ROB7 = b_reg[7];
    assign ROB8 = b_reg[8];
    assign ROB9 = b_reg[9];
    assign ROB10 = b_reg[10];
    assign ROB11 = b_reg[11];
    assign ROB12 = b_reg[12];
    assign ROB13 = b_reg[13];
    assign ROB14 = b_reg[14];
    assign ROB15 = b_reg[15];
    assign ROB16 = b_reg[16];
    assign ROB17 = b_reg[17];
    assign ROC0 = c_reg[0];
    assign ROC1 = c_reg[1];
    assign ROC2 = c_reg[2];
    assign ROC3 = c_reg[3];
    assign ROC4 = c_reg[4];
    assign ROC5 = c_reg[5];
    assign ROC6 = c_reg[6];
    assign ROC7 = c_reg[7];
    assign ROC8 = c_reg[8];
    assign ROC9 = c_reg[9];
    assign ROC10 = c_reg[10];
    assign ROC11 = c_reg[11];
    assign ROC12 = c_reg[12];
    assign ROC13 = c_reg[13];
    assign ROC14 = c_reg[14];
    assign ROC15 = c_reg[15];
    assign ROC16 = c_reg[16];
    assign ROC17 = c_reg[17];
    assign SROA0 = a_reg[0];
    assign SROA1 = a_reg[1];
    assign SROA2 = a_reg[2];
    assign SROA3 = a_reg[3];
    assign SROA4 = a_reg[4];
    assign SROA5 = a_reg[5];
    assign SROA6 = a_reg[6];
    assign SROA7 = a_reg[7];
    assign SROA8 = a_reg[8];
    assign SROA9 = a_reg[9];
    assign SROA10 = a_reg[10];
    assign SROA11 = a_reg[11];
    assign SROA12 = a_reg[12];
    assign SROA13 = a_reg[13];
    assign SROA14 = a_reg[14];
    assign SROA15 = a_reg[15];
    assign SROA16 = a_reg[16];
    assign SROA17 = a_reg[17];
    assign SROB0 = b_reg[0];
    assign SROB1 = b_reg[1];
    assign SROB2 = b_reg[2];
    assign SROB3 = b_reg[3];
    assign SROB4 = b_reg[4];
    assign SROB5 = b_reg[5];
    assign SROB6 = b_reg[6];
    assign SROB7 = b_reg[7];
    assign SROB8 = b_reg[8];
    assign SROB9 = b_reg[9];
    assign SROB10 = b_reg[10];
    assign SROB11 = b_reg[11];
    assign SROB12 = b_reg[12];
    assign SROB13 = b_reg[13];
    assign SROB14 = b_reg[14];
    assign SROB15 = b_reg[15];
    assign SROB16 = b_reg[16];
    assign SROB17 = b_reg[17];

    // SRIA and SRIB feed only the shift chain, which is refused above.
    /* verilator lint_off UNUSEDSIGNAL */
    wire [35:0] unused_shift_inputs = {SRIA17, SRIA16, SRIA15, SRIA14, SRIA13, SRIA12, SRIA11, SRIA10, SRIA9, SRIA8, SRIA7, SRIA6, SRIA5, SRIA4, SRIA3, SRIA2, SRIA1, SRIA0, SRIB17, SRIB16, SRIB15, SRIB14, SRIB13, SRIB12, SRIB11, SRIB10, SRIB9, SRIB8, SRIB7, SRIB6, SRIB5, SRIB4, SRIB3, SRIB2, SRIB1, SRIB0};
    /* verilator lint_on UNUSEDSIGNAL */
endmodule
